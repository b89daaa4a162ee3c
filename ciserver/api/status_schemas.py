"""The commit statuses a build shows: what each forge should show and whether it does (ciserver.statuses)."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field

from ciserver.store.models import CommitStatus


class StatusOut(BaseModel):
    """A commit status of the build as its forge should show it, and whether the forge has it."""

    context: str
    state: str = Field(description="pending, running, success, failure, error, canceled or skipped.")
    description: str
    sent: bool = Field(description="The forge has this state.")
    reported_at: datetime | None = Field(description="When the forge last took a state of it.")
    reported_state: str | None
    attempts: int = Field(description="Failed sends of this state so far.")
    error: str | None = Field(
        description="Why the last send failed; 'gave up: ...' once it is not tried again."
    )

    @classmethod
    def of(cls, status: CommitStatus) -> StatusOut:
        return cls(
            context=status.context,
            state=status.state,
            description=status.description,
            sent=status.sent_version >= status.version,
            reported_at=status.reported_at,
            reported_state=status.reported_state,
            attempts=status.attempts,
            error=status.error,
        )
