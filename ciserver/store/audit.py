"""The audit log: every write, through the API or the CLI, says who did what to which thing."""

from __future__ import annotations

import getpass
import os
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from ciserver.store.models import AuditEntry, Token


def record(
    session: Session, actor: str, action: str, target: str, detail: dict[str, Any] | None = None
) -> None:
    """Add an entry in the caller's transaction, so it is kept exactly when the change is."""
    session.add(AuditEntry(actor=actor, action=action, target=target, detail=detail))


def cli_actor() -> str:
    """Who ran a CLI command on the server's host: its login name (the uid when it has none)."""
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):  # no passwd entry, as in a container run under an arbitrary uid
        return f"cli:uid {os.getuid()}"


def token_detail(token: Token) -> dict[str, Any]:
    """What a token.create entry keeps: its role and expiry, never the secret."""
    detail: dict[str, Any] = {"role": token.role}
    if token.expires_at is not None:
        detail["expires_at"] = token.expires_at.isoformat()
    return detail


def list_entries(
    session: Session,
    *,
    actor: str | None = None,
    action: str | None = None,
    target: str | None = None,
    limit: int = 50,
    offset: int = 0,
) -> tuple[list[AuditEntry], int]:
    """Entries newest first, and how many match in all. `actor` and `action` match exactly; `target`
    matches the thing itself and everything under it (`project:acme/app` also finds its environments'
    and secrets' entries), its characters taken literally."""
    query = select(AuditEntry)
    if actor is not None:
        query = query.where(AuditEntry.actor == actor)
    if action is not None:
        query = query.where(AuditEntry.action == action)
    if target is not None:
        query = query.where(
            (AuditEntry.target == target) | AuditEntry.target.startswith(f"{target}/", autoescape=True)
        )
    total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
    page = query.order_by(AuditEntry.id.desc()).limit(limit).offset(offset)
    return list(session.scalars(page)), total
