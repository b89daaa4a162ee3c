"""Credentials of a clone URL, kept apart from it: `projects.repo_url` holds the URL without them and
`projects.repo_credentials` the username and password encrypted with the server's Fernet key, as job
and webhook secrets are. Workers hand them to git through its environment (workers.git_command).
"""

from __future__ import annotations

import json
import logging

from cryptography.fernet import Fernet, InvalidToken
from sqlalchemy import select
from sqlalchemy.orm import Session

from ciserver.clone_urls import CloneURLError, Remote, redact, starred
from ciserver.config import Settings
from ciserver.crypto import SecretKeyError, load_fernet
from ciserver.store.db import engine_for
from ciserver.store.models import Project

log = logging.getLogger(__name__)


def seal_clone_url(project: Project, fernet: Fernet) -> None:
    """Move any credentials out of `project.repo_url` into `repo_credentials`, encrypted."""
    remote = Remote.parse(project.repo_url)
    if remote.username is None:
        return
    plain = json.dumps({"username": remote.username, "password": remote.password})
    project.repo_url = remote.url
    project.repo_credentials = fernet.encrypt(plain.encode()).decode()


def clone_remote(repo_url: str, repo_credentials: str | None, settings: Settings) -> Remote:
    """Where a worker clones from, with the credentials decrypted (raises SecretKeyError when the
    server's key cannot read them)."""
    if repo_credentials is None:
        return Remote.parse(repo_url)  # a row an earlier release wrote, not converted yet
    try:
        plain = json.loads(load_fernet(settings).decrypt(repo_credentials.encode()))
    except InvalidToken:
        raise SecretKeyError(
            f"the server's secret key cannot read the credentials of {repo_url}: was "
            "CISERVER_SECRET_KEY or secret.key changed?"
        ) from None
    return Remote(repo_url, plain["username"], plain["password"])


def shown_repo_url(project: Project) -> str:
    """The clone URL for answers and logs: `https://***@host/...` when it has credentials."""
    return redact(project.repo_url) if project.repo_credentials is None else starred(project.repo_url)


def seal_clone_urls(session: Session, fernet: Fernet) -> list[str]:
    """Convert the rows earlier releases stored with credentials in the URL; returns their names."""
    sealed = []
    for project in session.scalars(select(Project).where(Project.repo_credentials.is_(None))):
        try:
            before = project.repo_url
            seal_clone_url(project, fernet)
        except CloneURLError as exc:
            log.warning("project %s: clone URL left as it is: %s", project.name, exc)
            continue
        if project.repo_url != before:
            sealed.append(project.name)
    return sealed


def drop_old_pages(db_url: str) -> None:
    """SQLite keeps a replaced value in free pages and in its write-ahead log until they are reused:
    rebuild the file and empty the log, so the clear credentials are gone from the disk too."""
    if not db_url.startswith("sqlite"):
        return  # PostgreSQL drops old row versions at its next VACUUM
    connection = engine_for(db_url).raw_connection()
    try:
        connection.execute("VACUUM")
        connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        connection.close()
