"""Reading the events table as a feed: where a reader is, and what it has not shown yet.

Shared by the API's stream (ciserver.api.events) and `ciserver up`'s progress lines, so it imports
neither FastAPI nor the migrations: only SQLAlchemy and the store's models.

On SQLite writers take turns, so events commit in id order and a reader goes on from the last id it
saw. On PostgreSQL two transactions may commit in the other order of their ids (the one holding
id 41 commits after the one holding 42): a reader would skip 41 for good. So there the cursor
re-reads the ids it passed during the last `hold` seconds and shows only those it has not shown.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from sqlalchemy import Engine, create_engine
from sqlalchemy.orm import Session

from ciserver.store.events import describe, events_after, last_event_id
from ciserver.store.models import Event

BATCH = 500
# Seconds a late commit on PostgreSQL is still looked for below the last id shown.
HOLD = 3.0


@dataclass
class EventCursor:
    """Where a reader stands: every event up to `last` is shown, except (for `hold` seconds after
    the cursor passed them) ids that may still commit late."""

    last: int
    hold: float = 0.0
    clock: Callable[[], float] = time.monotonic
    _passed: deque[tuple[float, int]] = field(default_factory=deque)  # (when, `last` before that move)
    _shown: set[int] = field(default_factory=set)  # ids above `low` already shown

    @property
    def low(self) -> int:
        """Read from above this id: `last`, or what it was `hold` seconds ago."""
        horizon = self.clock() - self.hold
        while self._passed and self._passed[0][0] < horizon:
            self._passed.popleft()
        low = self._passed[0][1] if self._passed else self.last
        self._shown = {event_id for event_id in self._shown if event_id > low}
        return low

    @property
    def window(self) -> int:
        """How many ids above `low` were shown already (a read asks for that many more rows)."""
        return len(self._shown)

    def fresh(self, events: list[Event]) -> list[Event]:
        """Those of `events` (read from above `low`) not shown yet, which it counts as shown now."""
        new = [event for event in events if event.id not in self._shown]
        if not new:
            return []
        newest = max(event.id for event in new)
        if newest > self.last:
            if self.hold:
                self._passed.append((self.clock(), self.last))
            self.last = newest
        if self.hold:
            self._shown.update(event.id for event in new)
        return new


@lru_cache(maxsize=8)
def reader_engine(url: str) -> Engine:
    """An engine for reading the feed. On SQLite its SELECTs run outside any transaction, so many
    readers never take the write lock the store's sessions take (store.db's BEGIN IMMEDIATE)."""
    if url.startswith("sqlite"):
        return create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})
    return create_engine(url, pool_pre_ping=True, pool_size=2, max_overflow=8)


def new_cursor(url: str, after: int | None) -> EventCursor:
    """A cursor after event `after`, or after the newest event (only what comes from now on)."""
    hold = 0.0 if url.startswith("sqlite") else HOLD
    if after is None:
        with Session(reader_engine(url)) as session:
            after = last_event_id(session)
    return EventCursor(after, hold)


def read_new(url: str, cursor: EventCursor, project_id: int | None = None) -> list[dict[str, Any]]:
    """The events the cursor has not shown yet (at most BATCH), as a stream's `data` carries them."""
    with Session(reader_engine(url)) as session:
        events = events_after(session, cursor.low, project_id=project_id, limit=BATCH + cursor.window)
        return [describe(event) for event in cursor.fresh(events)]
