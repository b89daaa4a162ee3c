"""The commit statuses outbox: what each build's forge should show, which of it is not sent yet, and
who is sending it.

A row per build and context holds only the newest state: a change bumps `version`, a send records the
version the forge got. A state superseded before it was sent is therefore never sent, and a row whose
`sent_version` is behind is due. Several API processes send at once, so a row is claimed with a
conditional UPDATE before it is sent, for a lease; a process that dies mid-send leaves a claim that
runs out, and another sends the row again.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from cryptography.fernet import Fernet, InvalidToken
from sqlalchemy import or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from ciserver.status_texts import WantedStatus
from ciserver.store.models import Build, CommitStatus, Event, Project, StatusCursor, utcnow

_CURSOR_ID = 1
MAX_EVENTS = 1000  # read in one pass; the rest the next pass
# How far behind the cursor events are read again: bounds that read to a range of the primary key
# (the events table is the largest there is, and `at` has no index).
REREAD_EVENTS = 1000


@dataclass(frozen=True)
class ClaimedStatus:
    """A status this process now sends: everything the request needs, read when it was claimed."""

    id: int
    version: int
    build_id: int
    forge: str
    repository: str
    api_url: str | None
    token: str
    sha: str
    ref: str
    context: str
    state: str
    description: str


def changed_builds(session: Session, reread_since: datetime) -> tuple[list[int], int]:
    """Builds of projects that report statuses, named by events past the cursor or newer than
    `reread_since`; and the newest event id read (where the cursor goes next).

    Events newer than `reread_since` are read again because on PostgreSQL two transactions may commit
    in the other order of their ids: an event with a lower id than one already read may appear late.
    Reading one again costs a refresh that changes nothing.
    """
    cursor = session.get(StatusCursor, _CURSOR_ID)
    after = cursor.event_id if cursor is not None else 0
    events = session.scalars(
        select(Event)
        .where(
            Event.id > after - REREAD_EVENTS,
            or_(Event.id > after, Event.at >= reread_since),
            Event.kind.in_(("build", "job")),
        )
        .order_by(Event.id)
        .limit(MAX_EVENTS)
    ).all()
    newest = max([after, *(event.id for event in events)])
    reporting = set(session.scalars(select(Project.id).where(Project.forge_token.is_not(None))))
    build_ids: dict[int, None] = {}
    for event in events:
        if event.project_id not in reporting:
            continue
        build_id = event.subject_id if event.kind == "build" else event.data.get("build_id")
        if isinstance(build_id, int):
            build_ids[build_id] = None
    return list(build_ids), newest


def advance_cursor(session: Session, event_id: int) -> None:
    """Move the cursor forward to `event_id` (never back: another process may be ahead)."""
    if session.get(StatusCursor, _CURSOR_ID) is None:
        try:
            with session.begin_nested():
                session.add(StatusCursor(id=_CURSOR_ID, event_id=event_id))
            return
        except IntegrityError:
            pass  # another process made it first
    session.execute(
        update(StatusCursor)
        .where(StatusCursor.id == _CURSOR_ID, StatusCursor.event_id < event_id)
        .values(event_id=event_id)
    )


def set_wanted(session: Session, build_id: int, wanted: list[WantedStatus]) -> int:
    """Make the build's rows say `wanted`; returns how many changed (and are now due)."""
    existing = {
        row.context: row
        for row in session.scalars(select(CommitStatus).where(CommitStatus.build_id == build_id))
    }
    changed = 0
    for status in wanted:
        row = existing.get(status.context)
        if row is None:
            try:
                with session.begin_nested():
                    session.add(
                        CommitStatus(
                            build_id=build_id,
                            context=status.context,
                            state=status.state.value,
                            description=status.description,
                        )
                    )
                changed += 1
            except IntegrityError:
                pass  # another process added it; its next refresh or ours brings it up to date
            continue
        # Conditional, so two processes refreshing the same build bump the version once.
        changed += session.execute(
            update(CommitStatus)
            .where(
                CommitStatus.id == row.id,
                or_(CommitStatus.state != status.state.value, CommitStatus.description != status.description),
            )
            .values(
                state=status.state.value,
                description=status.description,
                version=CommitStatus.version + 1,
                attempts=0,
                gave_up=False,
                next_attempt_at=utcnow(),
            )
        ).rowcount
    return changed


def due_status_ids(session: Session, now: datetime, limit: int = 100) -> list[int]:
    """Rows the forge does not have yet, whose next attempt is due and that nobody is sending."""
    return list(
        session.scalars(
            select(CommitStatus.id)
            .where(
                CommitStatus.sent_version < CommitStatus.version,
                CommitStatus.gave_up.is_(False),
                CommitStatus.next_attempt_at <= now,
                or_(CommitStatus.claimed_until.is_(None), CommitStatus.claimed_until < now),
            )
            .order_by(CommitStatus.id)
            .limit(limit)
        )
    )


def claim(
    session: Session, status_id: int, now: datetime, lease: timedelta, fernet: Fernet
) -> ClaimedStatus | None:
    """Take the row for `lease`; None when another process has it or it needs no sending now."""
    taken = session.execute(
        update(CommitStatus)
        .where(
            CommitStatus.id == status_id,
            CommitStatus.sent_version < CommitStatus.version,
            CommitStatus.gave_up.is_(False),
            or_(CommitStatus.claimed_until.is_(None), CommitStatus.claimed_until < now),
        )
        .values(claimed_until=now + lease)
    ).rowcount
    if not taken:
        return None
    row = session.get_one(CommitStatus, status_id, populate_existing=True)
    build = session.get_one(Build, row.build_id)
    project = build.project
    token = forge_token(project, fernet)
    if token is None:
        reason = (
            "no forge token is set"
            if project.forge_token is None
            else ("the server's key cannot read the forge token: set it again (ciserver project update)")
        )
        row.gave_up, row.error, row.claimed_until = True, f"gave up: {reason}", None
        return None
    return ClaimedStatus(
        id=row.id,
        version=row.version,
        build_id=build.id,
        forge=project.forge,
        repository=project.name,
        api_url=project.forge_api_url,
        token=token,
        sha=build.sha,
        ref=build.ref,
        context=row.context,
        state=row.state,
        description=row.description,
    )


def record_sent(session: Session, claimed: ClaimedStatus) -> None:
    """The forge has the claimed version: it is not sent again unless the state changes."""
    session.execute(
        update(CommitStatus)
        .where(CommitStatus.id == claimed.id)
        .values(
            sent_version=claimed.version,
            reported_at=utcnow(),
            reported_state=claimed.state,
            attempts=0,
            error=None,
            claimed_until=None,
        )
    )


def record_failure(
    session: Session, claimed: ClaimedStatus, error: str, *, give_up: bool, retry_at: datetime
) -> None:
    """The attempt failed: try again at `retry_at`, or (give_up) not until the state changes."""
    session.execute(
        update(CommitStatus)
        .where(CommitStatus.id == claimed.id)
        .values(
            attempts=CommitStatus.attempts + 1,
            error=error,
            gave_up=give_up,
            next_attempt_at=retry_at,
            claimed_until=None,
        )
    )


def release(session: Session, claimed: ClaimedStatus) -> None:
    """Give the row back unsent and without counting an attempt (its forge is not answering now)."""
    session.execute(update(CommitStatus).where(CommitStatus.id == claimed.id).values(claimed_until=None))


def attempts_of(session: Session, status_id: int) -> int:
    """How many sends of the row's current state have failed."""
    return session.get_one(CommitStatus, status_id).attempts


def seal_forge_token(token: str, fernet: Fernet) -> str:
    """The token as the store keeps it: Fernet ciphertext, as every other secret."""
    return fernet.encrypt(token.encode()).decode()


def forge_token(project: Project, fernet: Fernet) -> str | None:
    """The project's forge API token in clear; None when none is set or this key cannot read it."""
    if project.forge_token is None:
        return None
    try:
        return fernet.decrypt(project.forge_token.encode()).decode()
    except InvalidToken:
        return None
