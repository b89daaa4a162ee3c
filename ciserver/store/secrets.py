"""Project secrets: environment variables for the jobs that name them, kept only as Fernet ciphertext.
A secret may be scoped to one environment: its deployments, and jobs (`environment:`) of refs that
environment's rules allow, get that value instead of the project's.

A value never leaves this module in an exception or a repr: messages name the secret and the field,
and exceptions raised while handling a value are not chained (a UnicodeError carries its input).
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from cryptography.fernet import Fernet, InvalidToken
from sqlalchemy import select
from sqlalchemy.orm import Session

from ciserver.pipeline.environments import ENVIRONMENT_NAME
from ciserver.store.models import Project, ScopedSecret, Secret, utcnow

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
MAX_NAME = 255
# Shorter values cannot be masked in logs without mangling them (GitLab asks for 8 as well).
MIN_VALUE = 8
MAX_VALUE = 64 * 1024


AnySecret = Secret | ScopedSecret


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


def check_environment(environment: str | None) -> str | None:
    """A scope must be an environment's name, as pipelines.yml spells them."""
    if environment is not None and not ENVIRONMENT_NAME.fullmatch(environment):
        raise SecretError(
            f"environment: {environment[:63]!r} is not an environment name "
            "(lowercase letters, digits, '-' and '_', at most 63)"
        )
    return environment


def set_secret(
    session: Session, project: Project, name: str, value: str, fernet: Fernet, environment: str | None = None
) -> bool:
    """Create or replace secret `name` of `project` (for one environment only, when given); True when
    it is new."""
    check_secret_name(name)
    check_environment(environment)
    ciphertext = fernet.encrypt(_encode_value(value)).decode()
    secret = _find(session, project.id, name, environment)
    if secret is None:
        if environment is None:
            session.add(Secret(project_id=project.id, name=name, ciphertext=ciphertext))
        else:
            session.add(
                ScopedSecret(project_id=project.id, name=name, environment=environment, ciphertext=ciphertext)
            )
        session.flush()
        return True
    secret.ciphertext, secret.updated_at = ciphertext, utcnow()
    session.flush()
    return False


def delete_secret(session: Session, project: Project, name: str, environment: str | None = None) -> bool:
    """Remove secret `name` of `project` (its value for one environment, when given); False when there
    was none."""
    check_secret_name(name)
    check_environment(environment)
    secret = _find(session, project.id, name, environment)
    if secret is None:
        return False
    session.delete(secret)
    session.flush()
    return True


def get_secret(
    session: Session, project: Project, name: str, environment: str | None = None
) -> AnySecret | None:
    return _find(session, project.id, name, environment)


def list_secrets(session: Session, project: Project) -> list[AnySecret]:
    """The project's secrets by name, each unscoped one before its scoped ones; callers show names,
    scopes and dates, never decrypt."""
    found: list[AnySecret] = [
        *session.scalars(select(Secret).where(Secret.project_id == project.id)),
        *session.scalars(select(ScopedSecret).where(ScopedSecret.project_id == project.id)),
    ]
    return sorted(found, key=lambda s: (s.name, s.environment or ""))


def secret_values(
    session: Session, project_id: int, names: Iterable[str], fernet: Fernet, environment: str | None = None
) -> dict[str, str]:
    """The plaintext of exactly the secrets named: an environment's own value where it has one, else
    the project's. SecretError names any missing or unreadable."""
    wanted = sorted(set(names))
    rows: dict[str, AnySecret] = {
        s.name: s
        for s in session.scalars(
            select(Secret).where(Secret.project_id == project_id, Secret.name.in_(wanted))
        )
    }
    if environment is not None:
        scoped = select(ScopedSecret).where(
            ScopedSecret.project_id == project_id,
            ScopedSecret.environment == environment,
            ScopedSecret.name.in_(wanted),
        )
        rows.update((s.name, s) for s in session.scalars(scoped))
    missing = [n for n in wanted if n not in rows]
    if missing:
        raise SecretError(_missing(session, project_id, missing, environment))
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


def _missing(session: Session, project_id: int, missing: list[str], environment: str | None) -> str:
    """secrets: A, B not set for project o/app, with where a scoped value of them does exist."""
    project = session.get(Project, project_id)
    where = f"project {project.name}" if project else f"project {project_id}"
    if environment is not None:
        where += f" or its environment {environment}"
    scoped = session.execute(
        select(ScopedSecret.name, ScopedSecret.environment).where(
            ScopedSecret.project_id == project_id, ScopedSecret.name.in_(missing)
        )
    )
    elsewhere = sorted(f"{name} is set for environment {scope} only" for name, scope in scoped)
    hint = f"; {', '.join(elsewhere)} (a job gets those with `environment:`)" if elsewhere else ""
    return (
        f"secrets: {', '.join(missing)} not set for {where}{hint} "
        "(set with `ciserver secret set OWNER/NAME KEY` or PUT /api/v1/projects/OWNER/NAME/secrets/KEY)"
    )


def _find(session: Session, project_id: int, name: str, environment: str | None) -> AnySecret | None:
    if environment is None:
        return session.scalar(select(Secret).where(Secret.project_id == project_id, Secret.name == name))
    return session.scalar(
        select(ScopedSecret).where(
            ScopedSecret.project_id == project_id,
            ScopedSecret.environment == environment,
            ScopedSecret.name == name,
        )
    )
