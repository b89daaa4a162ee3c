"""Which key the database's secrets are encrypted with, checked before a process starts using one.

A lost or changed key makes every secret unreadable, and a process that carried on with a new key
would write secrets under two keys. So `serve`, `worker`, `up` and the CLI's writes open the key
here: the database keeps a known text encrypted with the key of its first use (`key_check`), a key
that cannot read it is refused with the setting named, and no key file is made while the database
holds encrypted data. A database from before the check is checked against the secrets it holds,
then gets one.
"""

from __future__ import annotations

import logging

from cryptography.fernet import Fernet, InvalidToken
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from ciserver.config import Settings
from ciserver.crypto import SecretKeyError, is_fernet_token, load_fernet
from ciserver.store.clone_credentials import drop_old_pages, seal_clone_urls
from ciserver.store.db import session_scope
from ciserver.store.models import KeyCheck, Project, Secret
from ciserver.store.projects import seal_clear_webhook_secrets

log = logging.getLogger(__name__)

CHECK_ID = 1
CHECK_TEXT = b"ciserver key check"


def open_server_key(settings: Settings) -> Fernet:
    """The server's key, once it is known to read what the database holds; SecretKeyError otherwise.

    Webhook secrets and clone URL credentials an earlier release kept in clear are encrypted on the
    way, and the database file rewritten so that their clear text is gone from the disk too.
    """
    with session_scope(settings.db_url) as session:
        sample = _encrypted_sample(session)
        if sample is not None and settings.secret_key is None and not settings.secret_key_file.exists():
            raise SecretKeyError(
                f"{settings.secret_key_file} is missing, but the database holds secrets encrypted with "
                "a key: restore the file from a backup, or set CISERVER_SECRET_KEY to that key (a new "
                "key could read none of them, so none is made)"
            )
        fernet = load_fernet(settings)
        if sample is not None and not _reads(fernet, sample):
            raise _wrong_key(settings)
        if session.get(KeyCheck, CHECK_ID) is None:
            _write_check(session, fernet, settings)
        sealed = seal_clear_webhook_secrets(session, fernet)
        sealed_urls = seal_clone_urls(session, fernet)
    if sealed:
        log.warning("encrypted the webhook secrets of %s, kept in clear until now", ", ".join(sealed))
    if sealed_urls:
        log.warning(
            "encrypted the clone URL credentials of %s, kept in clear until now", ", ".join(sealed_urls)
        )
    if sealed or sealed_urls:
        drop_old_pages(settings.db_url)
    return fernet


def _encrypted_sample(session: Session) -> str | None:
    """Something encrypted with the key: the check, or in a database from before it, any secret."""
    check = session.get(KeyCheck, CHECK_ID)
    if check is not None:
        return check.token
    job_secret = session.scalar(select(Secret.ciphertext).limit(1))
    if job_secret is not None:
        return job_secret
    credentials = session.scalar(
        select(Project.repo_credentials).where(Project.repo_credentials.is_not(None))
    )
    if credentials is not None:
        return credentials
    return next((s for s in session.scalars(select(Project.secret)) if is_fernet_token(s)), None)


def _reads(fernet: Fernet, token: str) -> bool:
    try:
        fernet.decrypt(token.encode())
    except InvalidToken:
        return False
    return True


def _write_check(session: Session, fernet: Fernet, settings: Settings) -> None:
    try:
        with session.begin_nested():
            session.add(KeyCheck(id=CHECK_ID, token=fernet.encrypt(CHECK_TEXT).decode()))
    except IntegrityError:
        # Another process wrote its check first (PostgreSQL; SQLite lets one writer in at a time).
        winner = session.get(KeyCheck, CHECK_ID, populate_existing=True)
        if winner is None or not _reads(fernet, winner.token):
            raise _wrong_key(settings) from None


def _wrong_key(settings: Settings) -> SecretKeyError:
    given = "CISERVER_SECRET_KEY" if settings.secret_key is not None else str(settings.secret_key_file)
    return SecretKeyError(
        f"{given} is not the key the database's secrets were encrypted with: set CISERVER_SECRET_KEY "
        f"(or restore {settings.secret_key_file}) to that key; nothing was changed"
    )
