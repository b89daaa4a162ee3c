"""Job logs, artifacts and caches kept in the database (CISERVER_BLOB_STORE=database): the one store
that the API and every worker host reach already, so nothing else has to be shared or served.

Both are rows of bounded size: a log is pieces at their byte offsets (a read from offset N looks at a
few rows, found by the primary key), a blob is numbered chunks written under no key and given its key
in one short transaction at the end. Writes are spread over short transactions, so that on SQLite a
large artifact never holds the write lock for long.
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterator
from datetime import timedelta
from typing import BinaryIO

from sqlalchemy import Engine, delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from ciserver.logs import LogStoreError
from ciserver.store.db import engine_for
from ciserver.store.models import Blob, BlobChunk, LogChunk, utcnow

LOG_PIECE = 64 * 1024  # a log row holds at most this, so a read from N starts at rows from N - LOG_PIECE
CHUNK = 1024 * 1024  # a blob row
BATCH = 8  # blob rows per transaction
SPOOL = 8 * 1024 * 1024  # a blob read for seeking stays in memory up to this, then goes to a temp file
# A blob without a key this long was left by a dead writer, or replaced that long ago.
ABANDONED_AFTER = timedelta(days=1)


class DatabaseLogStore:
    """The log store in the database. One writer appends to a job's log at a time (its attempt's
    LogWriter, or the reaper once that worker is gone), so the end it last wrote is remembered; the
    primary key refuses a second write at the same offset."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._ends: dict[int, int] = {}

    @property
    def engine(self) -> Engine:
        return engine_for(self.url)

    def append(self, job_id: int, data: bytes) -> None:
        if not data:
            return
        start = self._ends.get(job_id)
        try:
            if start is None:
                start = self.size(job_id)
            rows = [
                {"job_id": job_id, "start": start + i, "data": data[i : i + LOG_PIECE]}
                for i in range(0, len(data), LOG_PIECE)
            ]
            with self.engine.begin() as connection:
                connection.execute(insert(LogChunk), rows)
        except SQLAlchemyError as exc:
            self._ends.pop(job_id, None)
            reason = _reason(exc)
            raise LogStoreError(f"the log store (database) could not keep the output: {reason}") from None
        if len(self._ends) > 10_000:
            self._ends.clear()
        self._ends[job_id] = start + len(data)

    def read(self, job_id: int, offset: int = 0, limit: int | None = None) -> bytes:
        query = select(LogChunk.start, LogChunk.data).where(
            LogChunk.job_id == job_id, LogChunk.start > offset - LOG_PIECE
        )
        if limit is not None:
            query = query.where(LogChunk.start < offset + limit)
        with self.engine.connect() as connection:
            rows = connection.execute(query.order_by(LogChunk.start)).all()
        kept, base = bytearray(), None
        for start, data in rows:
            if start + len(data) <= offset:
                continue
            base = start if base is None else base
            kept += data
        if base is None:
            return b""
        view = kept[max(0, offset - base) :]
        return bytes(view if limit is None else view[:limit])

    def size(self, job_id: int) -> int:
        query = (
            select(LogChunk.start + func.length(LogChunk.data))
            .where(LogChunk.job_id == job_id)
            .order_by(LogChunk.start.desc())
            .limit(1)
        )
        with self.engine.connect() as connection:
            end = int(connection.execute(query).scalar() or 0)
        self._ends[job_id] = end
        return end


class DatabaseBlobStore:
    """Blobs of one namespace (`artifacts`, `cache`) in the database."""

    def __init__(self, url: str, namespace: str) -> None:
        self.url, self.prefix = url, f"{namespace}/"

    @property
    def engine(self) -> Engine:
        return engine_for(self.url)

    @contextlib.contextmanager
    def writer(self, key: str) -> Iterator[BinaryIO]:
        with self.engine.begin() as connection:
            blob_id = connection.execute(
                insert(Blob).values(key=None, size=0, created_at=utcnow()).returning(Blob.id)
            ).scalar_one()
        out = _ChunkWriter(self.engine, blob_id)
        try:
            yield out  # type: ignore[misc]
            out.finish()
            self._name(blob_id, self.prefix + key, out.size)
        except BaseException:
            with contextlib.suppress(SQLAlchemyError):
                self._drop(blob_id)
            raise

    @contextlib.contextmanager
    def reader(self, key: str) -> Iterator[BinaryIO | None]:
        chunks = self.chunks(key)
        if chunks is None:
            yield None
            return
        with tempfile.SpooledTemporaryFile(max_size=SPOOL) as f:
            for chunk in chunks:
                f.write(chunk)
            f.seek(0)
            yield f  # type: ignore[misc]

    def chunks(self, key: str) -> Iterator[bytes] | None:
        with self.engine.connect() as connection:
            blob_id = connection.execute(select(Blob.id).where(Blob.key == self.prefix + key)).scalar()
        if blob_id is None:
            return None
        return self._chunks(blob_id)

    def _chunks(self, blob_id: int) -> Iterator[bytes]:
        """BATCH rows a transaction, so that a long download never holds SQLite's lock; a blob replaced
        meanwhile keeps its rows (see _name), so the reader still gets all of the one it started."""
        seq = 0
        while True:
            query = (
                select(BlobChunk.data)
                .where(BlobChunk.blob_id == blob_id, BlobChunk.seq >= seq, BlobChunk.seq < seq + BATCH)
                .order_by(BlobChunk.seq)
            )
            with self.engine.connect() as connection:
                rows = connection.execute(query).scalars().all()
            yield from rows
            if len(rows) < BATCH:
                return
            seq += BATCH

    def local_path(self, key: str) -> None:
        return None

    def delete(self, key: str) -> None:
        with self.engine.connect() as connection:
            blob_id = connection.execute(select(Blob.id).where(Blob.key == self.prefix + key)).scalar()
        if blob_id is not None:
            self._drop(blob_id)

    def _name(self, blob_id: int, key: str, size: int) -> None:
        """Give the finished blob its key, in place of the blob that held it. That one loses its key
        and is removed with the abandoned blobs later, so a reader already under way still finishes it."""
        for attempt in range(3):
            try:
                with self.engine.begin() as connection:
                    connection.execute(
                        update(Blob).where(Blob.key == key).values(key=None, created_at=utcnow())
                    )
                    named = connection.execute(
                        update(Blob).where(Blob.id == blob_id).values(key=key, size=size)
                    )
                    if named.rowcount != 1:
                        raise RuntimeError(f"{key}: the blob was removed while it was written")
                return
            except IntegrityError:
                if attempt == 2:
                    raise  # another writer named its blob in between, again and again

    def _drop(self, blob_id: int) -> None:
        with self.engine.begin() as connection:
            connection.execute(delete(BlobChunk).where(BlobChunk.blob_id == blob_id))
            connection.execute(delete(Blob).where(Blob.id == blob_id))


class _ChunkWriter:
    """A write-only file that turns into blob rows of CHUNK bytes, BATCH rows a transaction."""

    def __init__(self, engine: Engine, blob_id: int) -> None:
        self.engine, self.blob_id = engine, blob_id
        self.size, self._seq = 0, 0
        self._buffer = bytearray()
        self._rows: list[dict[str, object]] = []

    def write(self, data: bytes) -> int:
        self._buffer += data
        self.size += len(data)
        while len(self._buffer) >= CHUNK:
            self._row(bytes(self._buffer[:CHUNK]))
            del self._buffer[:CHUNK]
        return len(data)

    def tell(self) -> int:
        return self.size

    def flush(self) -> None:
        pass

    def finish(self) -> None:
        if self._buffer:
            self._row(bytes(self._buffer))
            self._buffer.clear()
        self._insert()

    def _row(self, data: bytes) -> None:
        self._rows.append({"blob_id": self.blob_id, "seq": self._seq, "data": data})
        self._seq += 1
        if len(self._rows) >= BATCH:
            self._insert()

    def _insert(self) -> None:
        if self._rows:
            with self.engine.begin() as connection:
                connection.execute(insert(BlobChunk), self._rows)
            self._rows = []


def forget_abandoned_blobs(url: str) -> int:
    """Remove blobs replaced a while ago, or whose writer died before naming them; returns how many."""
    engine = engine_for(url)
    with engine.begin() as connection:
        ids = list(
            connection.execute(
                select(Blob.id).where(Blob.key.is_(None), Blob.created_at < utcnow() - ABANDONED_AFTER)
            ).scalars()
        )
        if ids:
            connection.execute(delete(BlobChunk).where(BlobChunk.blob_id.in_(ids)))
            connection.execute(delete(Blob).where(Blob.id.in_(ids)))
    return len(ids)


def _reason(exc: SQLAlchemyError) -> str:
    return str(getattr(exc, "orig", None) or exc).splitlines()[0]
