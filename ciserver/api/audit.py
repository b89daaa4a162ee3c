"""The audit log, read by admins: who did what to which thing, and when, through the API or the CLI.

Admin only: the log names every token's holder and every change ops made, which is more than the
roles below admin may see of each other.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from ciserver.api.deps import MAX_ROW, Admin, DatabaseDep
from ciserver.api.schemas import AuditEntryOut, AuditList
from ciserver.store.audit import list_entries

router = APIRouter(prefix="/api/v1/audit", tags=["audit"])

_TEXT = 1024  # the target column's width; actor and action are narrower, but a longer one just finds none


@router.get("", response_model=AuditList, summary="The audit log, newest first")
def audit_log(
    _: Admin,
    db: DatabaseDep,
    actor: Annotated[str | None, Query(max_length=_TEXT, description="e.g. `token:3 (ci bot)`")] = None,
    action: Annotated[str | None, Query(max_length=_TEXT, description="e.g. environment.promote")] = None,
    target: Annotated[
        str | None,
        Query(max_length=_TEXT, description="The thing and what is under it, e.g. project:acme/app"),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0, le=MAX_ROW)] = 0,
) -> AuditList:
    with db.session() as session:
        entries, total = list_entries(
            session, actor=actor, action=action, target=target, limit=limit, offset=offset
        )
        return AuditList(items=[AuditEntryOut.of(e) for e in entries], total=total)
