"""Job logs: a live Redis Stream while the job runs, a file per job in the log store for good.

The worker writes every chunk to the store first, then to the stream, tagged with its byte
offset. Byte offsets are the one position shared by both, so a reader (the offset endpoint, or
an SSE client resuming with Last-Event-ID) can take what the store has and continue from the
stream, and falls back to the store alone when Redis lost the stream.

A job's output is capped (CISERVER_LOG_MAX_BYTES): past the first half of the cap nothing more is
published while the job runs; its last half is kept aside (ciserver.log_tail) and published when
the attempt ends, after a line saying how much was cut. Both only ever append, so the offsets of
the store and the stream still agree.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Protocol

from redis import Redis
from redis.exceptions import RedisError

from ciserver.log_tail import TailFile
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
    masked bytes that were actually kept. With `max_bytes`, one writer (one attempt) keeps at most
    about that much: its first and last halves, and a line between them saying what was cut.
    """

    def __init__(
        self,
        store: LogStore,
        redis: Redis | None,
        job_id: int,
        stream_ttl: int = 3600,
        secrets: Iterable[str] = (),
        max_bytes: int | None = None,
        spill_dir: Path | None = None,
    ) -> None:
        self.store, self.redis, self.job_id, self.stream_ttl = store, redis, job_id, stream_ttl
        # Read from the store at the first write, never inside a caller's transaction.
        self._offset: int | None = None
        self._masker = Masker(secrets)
        self._pending = b""
        self._stream_down_until = 0.0  # after a failure the stream is tried again from then on
        self.store_error: str | None = None  # set once the store failed; the job ends with it
        self._tail_size = (max_bytes or 0) // 2
        self._head_size = None if max_bytes is None else max_bytes - self._tail_size
        self._head_left = self._head_size
        self._tail: TailFile | None = None  # once the head is full, what comes goes here
        self._spill_dir = spill_dir
        self._ends_line = True  # whether what was published last ended a line

    @property
    def offset(self) -> int:
        """The log's size: where the next chunk starts."""
        if self._offset is None:
            self._offset = self.store.size(self.job_id)
        return self._offset

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
        """Publish what is held back (a partial line, a tail that could start a secret), and past
        the cap, the line saying what was cut and the tail: the end of this attempt's output."""
        self._pending += self._masker.flush()
        if self._pending:
            self._publish(self._pending)
            self._pending = b""
        if self._tail is not None:
            tail, self._tail = self._tail, None
            try:
                self._publish_tail(tail)
            finally:
                tail.close()

    def close(self, status: str) -> None:
        """Flush what is left and mark the stream's end with the job's final status."""
        with contextlib.suppress(LogStoreError):  # the job's error already says so
            self.flush()
        if self._xadd({"end": status}, now=True) and self.redis is not None:
            with contextlib.suppress(RedisError):
                self.redis.expire(stream_key(self.job_id), self.stream_ttl)

    def _publish(self, chunk: bytes) -> None:
        """Into the log while the head has room (the rest of a line that crosses the cap goes to the
        tail), else into the tail."""
        if self._head_left is None:
            return self._append(chunk)
        if self._tail is None and len(chunk) <= self._head_left:
            self._head_left -= len(chunk)
            return self._append(chunk)
        if self._tail is None:
            room = chunk[: self._head_left]
            head = room[: room.rfind(b"\n") + 1] or room
            self._head_left = 0
            if head:
                self._append(head)
            self._tail = TailFile(self._tail_size, self._spill_dir)
            chunk = chunk[len(head) :]
        try:
            self._tail.add(chunk)
        except OSError as exc:
            self.store_error = f"the log store could not keep the output: {exc.strerror}"
            raise LogStoreError(self.store_error) from None

    def _publish_tail(self, tail: TailFile) -> None:
        """The line saying how much was cut, then the tail from its first whole line on."""
        chunks = tail.chunks()
        first = next(chunks, b"")
        skipped = first.find(b"\n") + 1 if tail.dropped else 0
        cut = tail.dropped + skipped
        if cut:
            lead = "" if self._ends_line else "\n"
            marker = (
                f"{lead}[ciserver: {cut:,} bytes of output cut here: the "
                f"log keeps the first {self._head_size:,} and the last {tail.size:,} bytes of each "
                "attempt (CISERVER_LOG_MAX_BYTES)]\n"
            )
            self._append(marker.encode())
        for chunk in (first[skipped:], *chunks):
            if chunk:
                self._append(chunk)

    def _append(self, chunk: bytes) -> None:
        # The store first: a chunk in the stream is always in the store too, once the job ends.
        if self.store_error is not None:
            return  # nothing more is kept once the store failed, so the log stays whole up to there
        offset = self.offset
        try:
            self.store.append(self.job_id, chunk)
        except LogStoreError as exc:
            self.store_error = str(exc)
            raise
        self._xadd({"o": offset, "d": chunk})
        self._offset = offset + len(chunk)
        self._ends_line = chunk.endswith(b"\n")

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
