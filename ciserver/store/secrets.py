"""Project secrets: environment variables for the jobs that name them, kept only as Fernet ciphertext.

A value never leaves this module in an exception or a repr: messages name the secret and the field,
and exceptions raised while handling a value are not chained (a UnicodeError carries its input).
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from cryptography.fernet import Fernet, InvalidToken
from sqlalchemy import select
from sqlalchemy.orm import Session

from ciserver.store.models import Project, Secret, utcnow

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
MAX_NAME = 255
# Shorter values cannot be masked in logs without mangling them (GitLab asks for 8 as well).
MIN_VALUE = 8
MAX_VALUE = 64 * 1024


class SecretError(ValueError):
    """A secret the server refuses or cannot give; the message names the field, never the value."""


def check_secret_name(name: str) -> str:
    """An environment variable name, since that is how a job receives it."""
    if len(name) > MAX_NAME or not _NAME.fullmatch(name):
        raise SecretError(
            f"name: {name[:MAX_NAME]!r} is not an environment variable name "
            f"(letters, digits and _, not starting with a digit, at most {MAX_NAME} characters)"
        )
    return name


def _encode_value(value: str) -> bytes:
    try:
        data = value.encode()
    except UnicodeEncodeError:
        raise SecretError("value: must be text (it holds an unpaired surrogate)") from None
    if len(value) < MIN_VALUE:
        raise SecretError(
            f"value: must be at least {MIN_VALUE} characters, or it could not be masked in job logs"
        )
    if len(data) > MAX_VALUE:
        raise SecretError(f"value: must be at most {MAX_VALUE} bytes in UTF-8")
    if b"\0" in data:
        raise SecretError("value: must not contain a NUL character (an environment variable cannot)")
    return data


def set_secret(session: Session, project: Project, name: str, value: str, fernet: Fernet) -> bool:
    """Create or replace secret `name` of `project`; True when it is new."""
    check_secret_name(name)
    ciphertext = fernet.encrypt(_encode_value(value)).decode()
    secret = _find(session, project.id, name)
    if secret is None:
        session.add(Secret(project_id=project.id, name=name, ciphertext=ciphertext))
        session.flush()
        return True
    secret.ciphertext, secret.updated_at = ciphertext, utcnow()
    session.flush()
    return False


def delete_secret(session: Session, project: Project, name: str) -> bool:
    """Remove secret `name` of `project`; False when there was none."""
    check_secret_name(name)
    secret = _find(session, project.id, name)
    if secret is None:
        return False
    session.delete(secret)
    session.flush()
    return True


def get_secret(session: Session, project: Project, name: str) -> Secret | None:
    return _find(session, project.id, name)


def list_secrets(session: Session, project: Project) -> list[Secret]:
    """The project's secrets by name; callers show names and dates, never decrypt."""
    return list(session.scalars(select(Secret).where(Secret.project_id == project.id).order_by(Secret.name)))


def secret_values(session: Session, project_id: int, names: Iterable[str], fernet: Fernet) -> dict[str, str]:
    """The plaintext of exactly the secrets a job names; SecretError names any missing or unreadable."""
    wanted = sorted(set(names))
    rows = {
        s.name: s
        for s in session.scalars(
            select(Secret).where(Secret.project_id == project_id, Secret.name.in_(wanted))
        )
    }
    missing = [n for n in wanted if n not in rows]
    if missing:
        project = session.get(Project, project_id)
        where = f"project {project.name}" if project else f"project {project_id}"
        raise SecretError(
            f"secrets: {', '.join(missing)} not set for {where} "
            "(set with `ciserver secret set OWNER/NAME KEY` or PUT /api/v1/projects/OWNER/NAME/secrets/KEY)"
        )
    values: dict[str, str] = {}
    for name, secret in rows.items():
        try:
            values[name] = fernet.decrypt(secret.ciphertext).decode()
        except InvalidToken:
            raise SecretError(
                f"secrets: {name} cannot be decrypted with this server's key "
                "(was CISERVER_SECRET_KEY or the data dir's secret.key changed? set the secret again)"
            ) from None
    return values


def _find(session: Session, project_id: int, name: str) -> Secret | None:
    return session.scalar(select(Secret).where(Secret.project_id == project_id, Secret.name == name))
