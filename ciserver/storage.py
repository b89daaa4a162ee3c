"""Where job logs at rest, artifacts and caches live (CISERVER_BLOB_STORE): files in the data dir, or
the database every host reaches, so that workers on other hosts share no filesystem.

A blob is written whole or not at all: a reader sees the old bytes under a key or the new ones, never
part of a write (a full disk, a killed worker). Keys are made by ciserver (job ids, digests), never
taken from a pipeline file.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import BinaryIO, Protocol

from ciserver.config import Settings
from ciserver.logs import FileLogStore, LogStore

CHUNK = 1024 * 1024


class BlobStore(Protocol):
    """Named blobs: artifacts (`JOB/INDEX`) and cache archives (`PROJECT/REF/KEY.tar`)."""

    def writer(self, key: str) -> AbstractContextManager[BinaryIO]:
        """A file to write the blob into; kept under `key` when the block ends, dropped if it raises."""
        ...

    def reader(self, key: str) -> AbstractContextManager[BinaryIO | None]:
        """The blob as a seekable file, or None when there is none."""
        ...

    def chunks(self, key: str) -> Iterator[bytes] | None:
        """The blob's bytes in order, or None when there is none."""
        ...

    def local_path(self, key: str) -> Path | None:
        """The file that holds the blob, when the store is files on this host."""
        ...

    def delete(self, key: str) -> None: ...


class FileBlobStore:
    """One file per blob under `root`; a write goes to a temporary file renamed into place."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, key: str) -> Path:
        return self.root / key

    @contextlib.contextmanager
    def writer(self, key: str) -> Iterator[BinaryIO]:
        target = self.path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, temporary = tempfile.mkstemp(dir=target.parent, prefix=".", suffix=".part")
        try:
            with os.fdopen(fd, "wb") as out:
                yield out
            os.replace(temporary, target)
        finally:
            if os.path.exists(temporary):
                os.unlink(temporary)

    @contextlib.contextmanager
    def reader(self, key: str) -> Iterator[BinaryIO | None]:
        try:
            f = self.path(key).open("rb")
        except (FileNotFoundError, IsADirectoryError):
            yield None
            return
        with f:
            yield f

    def chunks(self, key: str) -> Iterator[bytes] | None:
        path = self.path(key)
        if not path.is_file():
            return None
        return _file_chunks(path)

    def local_path(self, key: str) -> Path | None:
        path = self.path(key)
        return path if path.is_file() else None

    def delete(self, key: str) -> None:
        path = self.path(key)
        path.unlink(missing_ok=True)
        with contextlib.suppress(OSError):  # a job's folder goes with its last file
            path.parent.rmdir()


def _file_chunks(path: Path) -> Iterator[bytes]:
    with path.open("rb") as f:
        while chunk := f.read(CHUNK):
            yield chunk


def log_store(settings: Settings) -> LogStore:
    if settings.blob_store == "database":
        from ciserver.store.blobs import DatabaseLogStore

        return DatabaseLogStore(settings.db_url)
    return FileLogStore(settings.logs_dir)


def artifact_store(settings: Settings) -> BlobStore:
    return _blob_store(settings, "artifacts", settings.artifacts_dir)


def cache_store(settings: Settings) -> BlobStore:
    return _blob_store(settings, "cache", settings.cache_dir)


def _blob_store(settings: Settings, namespace: str, directory: Path) -> BlobStore:
    if settings.blob_store == "database":
        from ciserver.store.blobs import DatabaseBlobStore

        return DatabaseBlobStore(settings.db_url, namespace)
    return FileBlobStore(directory)
