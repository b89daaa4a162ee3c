"""The last bytes of a job's output past its log cap, kept in a file used as a ring.

A job may print without end; past CISERVER_LOG_MAX_BYTES its log keeps the head (already
published) and this tail, added at the end. A file, not memory, so the memory a running job
costs does not grow with the cap; it is unlinked from the start, so nothing is left behind.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

CHUNK = 64 * 1024


class TailFile:
    """Remembers the last `size` bytes added, and how many came before them."""

    def __init__(self, size: int, directory: Path | None = None) -> None:
        self.size = size
        self.seen = 0  # bytes added in all
        self._directory = directory
        self._file: tempfile._TemporaryFileWrapper[bytes] | None = None

    @property
    def dropped(self) -> int:
        """Bytes added that the tail no longer holds."""
        return max(0, self.seen - self.size)

    def add(self, data: bytes) -> None:
        """Keep `data` as the newest bytes (OSError when the disk refuses)."""
        start = self.seen
        self.seen += len(data)
        if len(data) > self.size:
            start, data = self.seen - self.size, data[-self.size :]
        if self._file is None:
            if self._directory is not None:
                self._directory.mkdir(parents=True, exist_ok=True)
            self._file = tempfile.TemporaryFile(dir=self._directory)  # noqa: SIM115 (closed in close())
        while data:
            at = start % self.size
            part = data[: self.size - at]
            os.pwrite(self._file.fileno(), part, at)
            start, data = start + len(part), data[len(part) :]

    def chunks(self) -> Iterator[bytes]:
        """What the tail holds, oldest first, in pieces of at most CHUNK bytes."""
        if self._file is None:
            return
        kept = min(self.seen, self.size)
        position = self.seen - kept
        while position < self.seen:
            at = position % self.size
            length = min(CHUNK, self.size - at, self.seen - position)
            yield os.pread(self._file.fileno(), length, at)
            position += length

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
