"""The audit log: every API write says who did what to which thing."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from ciserver.store.models import AuditEntry


def record(
    session: Session, actor: str, action: str, target: str, detail: dict[str, Any] | None = None
) -> None:
    """Add an entry in the caller's transaction, so it is kept exactly when the change is."""
    session.add(AuditEntry(actor=actor, action=action, target=target, detail=detail))
