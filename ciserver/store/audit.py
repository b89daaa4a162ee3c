"""The audit log: every write, through the API or the CLI, says who did what to which thing."""

from __future__ import annotations

import getpass
import os
from typing import Any

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
