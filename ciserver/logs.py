"""Job logs: a live Redis Stream while the job runs, a file per job in the log store for good.

The worker writes every chunk to the store first, then to the stream, tagged with its byte
offset. Byte offsets are the one position shared by both, so a reader (the offset endpoint, or
an SSE client resuming with Last-Event-ID) can take what the store has and continue from the
stream, and falls back to the store alone when Redis lost the stream.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from redis import Redis
from redis.exceptions import RedisError

from ciserver.masking import Masker

log = logging.getLogger(__name__)

# A chunk waits for its line to end, unless it grows past this.
MAX_PENDING = 64 * 1024
# A stream keeps about this many entries; an older part of a huge log is read from the store.
STREAM_MAXLEN = 20_000
# Seconds between tries of a live stream that failed (Redis restarting).
STREAM_RETRY = 2.0


def stream_key(job_id: int) -> str:
    return f"ciserver:log:{job_id}"


class LogStoreError(Exception):
    """The log store cannot keep a job's output (a full disk, a write error): the job ends in error."""


class LogStore(Protocol):
    """Where finished (and, on one host, running) logs are kept."""

    def append(self, job_id: int, data: bytes) -> None: ...
    def read(self, job_id: int, offset: int = 0, limit: int | None = None) -> bytes: ...
    def size(self, job_id: int) -> int: ...


class FileLogStore:
    """One append-only file per job under the data dir."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, job_id: int) -> Path:
        return self.root / str(job_id // 1000) / f"{job_id}.log"

    def append(self, job_id: int, data: bytes) -> None:
        """One chunk, whole or not at all: a short write (a full disk) is cut back off, so the log
        holds only what the stream announced."""
        path = self.path(job_id)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            # O_APPEND: one write per chunk, so a reader never sees half of one at the end.
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640)
        except OSError as exc:
            raise LogStoreError(f"the log store could not keep the output: {exc.strerror} ({path})") from None
        try:
            try:
                written = os.write(fd, data)
            except OSError as exc:
                written, reason = 0, exc.strerror
            else:
                reason = "No space left on device"
            if written < len(data):
                with contextlib.suppress(OSError):
                    os.ftruncate(fd, os.fstat(fd).st_size - written)
                raise LogStoreError(f"the log store could not keep the output: {reason} ({path})")
        finally:
            os.close(fd)

    def read(self, job_id: int, offset: int = 0, limit: int | None = None) -> bytes:
        try:
            with self.path(job_id).open("rb") as f:
                f.seek(offset)
                return f.read(-1 if limit is None else limit)
        except FileNotFoundError:
            return b""

    def size(self, job_id: int) -> int:
        try:
            return self.path(job_id).stat().st_size
        except FileNotFoundError:
            return 0


class LogWriter:
    """Takes a job's raw output and publishes it in whole lines to the store and the stream.

    The job's secret values are masked first, so neither ever holds one, and offsets count the
    masked bytes that were actually kept.
    """

    def __init__(
        self,
        store: LogStore,
        redis: Redis | None,
        job_id: int,
        stream_ttl: int = 3600,
        secrets: Iterable[str] = (),
    ) -> None:
        self.store, self.redis, self.job_id, self.stream_ttl = store, redis, job_id, stream_ttl
        self.offset = store.size(job_id)
        self._masker = Masker(secrets)
        self._pending = b""
        self._stream_down_until = 0.0  # after a failure the stream is tried again from then on
        self.store_error: str | None = None  # set once the store failed; the job ends with it

    def write(self, data: bytes) -> None:
        self._pending += self._masker.feed(data)
        cut = self._pending.rfind(b"\n") + 1
        if cut == 0 and len(self._pending) >= MAX_PENDING:
            cut = len(self._pending)
        if cut:
            chunk, self._pending = self._pending[:cut], self._pending[cut:]
            self._publish(chunk)

    def line(self, text: str) -> None:
        """A line of the server's own (e.g. why a job failed), in the same log."""
        self.write(text.encode() + b"\n")

    def flush(self) -> None:
        """Publish what is held back (a partial line, a tail that could start a secret)."""
        self._pending += self._masker.flush()
        if self._pending:
            self._publish(self._pending)
            self._pending = b""

    def close(self, status: str) -> None:
        """Flush what is left and mark the stream's end with the job's final status."""
        with contextlib.suppress(LogStoreError):  # the job's error already says so
            self.flush()
        if self._xadd({"end": status}, now=True) and self.redis is not None:
            with contextlib.suppress(RedisError):
                self.redis.expire(stream_key(self.job_id), self.stream_ttl)

    def _publish(self, chunk: bytes) -> None:
        # The store first: a chunk in the stream is always in the store too, once the job ends.
        if self.store_error is not None:
            return  # nothing more is kept once the store failed, so the log stays whole up to there
        try:
            self.store.append(self.job_id, chunk)
        except LogStoreError as exc:
            self.store_error = str(exc)
            raise
        self._xadd({"o": self.offset, "d": chunk})
        self.offset += len(chunk)

    def _xadd(self, fields: dict[str, int | bytes | str], *, now: bool = False) -> bool:
        """Add to the live stream; while Redis is away the store alone has the chunks (readers read
        them there) and the stream is tried again every STREAM_RETRY seconds."""
        if self.redis is None or (not now and time.monotonic() < self._stream_down_until):
            return False
        try:
            self.redis.xadd(stream_key(self.job_id), fields, maxlen=STREAM_MAXLEN, approximate=True)  # type: ignore[arg-type]
        except RedisError as exc:
            if not self._stream_down_until:
                log.warning(
                    "job %s: live log stream unavailable, the log store has it all: %s", self.job_id, exc
                )
            self._stream_down_until = time.monotonic() + STREAM_RETRY
            return False
        if self._stream_down_until:
            log.info("job %s: live log stream back", self.job_id)
            self._stream_down_until = 0.0
        return True


@dataclass(frozen=True)
class LogChunk:
    """A piece of a log with the byte offset it starts at."""

    offset: int
    data: bytes

    @property
    def end(self) -> int:
        return self.offset + len(self.data)
