"""The stores of logs at rest, artifacts and caches (CISERVER_BLOB_STORE): files in the data dir, or
the database on SQLite and PostgreSQL, behave alike: the same bytes at the same offsets, a blob whole
or not at all."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest
import sqlalchemy as sa
from redis import Redis

from ciserver.logs import FileLogStore, LogStore, LogWriter, stream_key
from ciserver.storage import BlobStore, FileBlobStore
from ciserver.store.blobs import LOG_PIECE, DatabaseBlobStore, DatabaseLogStore


def _url(kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if kind == "sqlite":
        return f"sqlite:///{tmp_path / 'ciserver.db'}"
    return str(request.getfixturevalue("postgres_url"))


@pytest.fixture(params=["files", "sqlite", "postgresql"])
def logs(request: pytest.FixtureRequest, tmp_path: Path) -> LogStore:
    if request.param == "files":
        return FileLogStore(tmp_path / "logs")
    return DatabaseLogStore(_url(request.param, request, tmp_path))


@pytest.fixture(params=["files", "sqlite", "postgresql"])
def blobs(request: pytest.FixtureRequest, tmp_path: Path) -> BlobStore:
    if request.param == "files":
        return FileBlobStore(tmp_path / "blobs")
    return DatabaseBlobStore(_url(request.param, request, tmp_path), "artifacts")


def test_a_log_reads_back_the_same_bytes_from_any_offset(logs: LogStore) -> None:
    appended = [os.urandom(n) for n in (1, 700, LOG_PIECE - 1, LOG_PIECE + 5, 3 * LOG_PIECE, 10)]
    for chunk in appended:
        logs.append(9, chunk)
    whole = b"".join(appended)
    assert logs.size(9) == len(whole)
    assert logs.read(9) == whole
    for offset in (0, 1, 700, LOG_PIECE, LOG_PIECE + 3, 2 * LOG_PIECE + 11, len(whole) - 1, len(whole)):
        assert logs.read(9, offset) == whole[offset:], offset
        assert logs.read(9, offset, 1000) == whole[offset : offset + 1000], offset
    assert logs.read(10) == b"" and logs.size(10) == 0, "another job's log is its own"


def test_a_second_writer_continues_where_the_first_stopped(logs: LogStore, redis_url: str) -> None:
    """An attempt's writer, then the reaper's note once that worker is gone: offsets stay one sequence."""
    redis = Redis.from_url(redis_url)
    redis.delete(stream_key(31))  # each store's run of this test starts with an empty stream
    first = LogWriter(logs, redis, 31)
    first.write(b"attempt 1\n")
    first.flush()
    second = LogWriter(logs, redis, 31)
    second.line("ciserver: the worker running it was lost")
    second.close("error")
    assert logs.read(31) == b"attempt 1\nciserver: the worker running it was lost\n"
    offsets = [int(f[b"o"]) for _, f in redis.xrange(stream_key(31)) if b"o" in f]
    assert offsets == [0, 10]


def test_a_blob_is_read_back_whole_and_replaced_whole(blobs: BlobStore) -> None:
    data = os.urandom(2 * 1024 * 1024 + 17)
    with blobs.writer("7/0") as out:
        out.write(data[:1000])
        out.write(data[1000:])
    with blobs.reader("7/0") as f:
        assert f is not None and f.read() == data
    chunks = blobs.chunks("7/0")
    assert chunks is not None and b"".join(chunks) == data
    with blobs.writer("7/0") as out:
        out.write(b"new")
    with blobs.reader("7/0") as f:
        assert f is not None and f.read() == b"new"
    blobs.delete("7/0")
    assert blobs.chunks("7/0") is None
    with blobs.reader("7/0") as f:
        assert f is None


def test_a_write_that_fails_leaves_the_old_blob_and_nothing_else(blobs: BlobStore) -> None:
    with blobs.writer("cache.tar") as out:
        out.write(b"old")
    with pytest.raises(RuntimeError), blobs.writer("cache.tar") as out:
        out.write(os.urandom(3 * 1024 * 1024))
        raise RuntimeError("the disk filled up")
    with blobs.reader("cache.tar") as f:
        assert f is not None and f.read() == b"old"
    if isinstance(blobs, DatabaseBlobStore):
        with blobs.engine.connect() as connection:
            assert connection.execute(sa.text("SELECT count(*) FROM blob_chunks")).scalar() == 1
    else:
        assert sorted(p.name for p in Path(blobs.root).rglob("*")) == ["cache.tar"]


def test_a_reader_keeps_the_blob_it_started_while_a_writer_replaces_it(blobs: BlobStore) -> None:
    old = os.urandom(5 * 1024 * 1024)
    with blobs.writer("k") as out:
        out.write(old)
    chunks = blobs.chunks("k")
    assert chunks is not None
    first = next(chunks)
    replaced = threading.Thread(target=lambda: _put(blobs, "k", b"new"))
    replaced.start()
    replaced.join(timeout=30)
    assert first + b"".join(chunks) == old
    with blobs.reader("k") as f:
        assert f is not None and f.read() == b"new"


def _put(blobs: BlobStore, key: str, data: bytes) -> None:
    with blobs.writer(key) as out:
        out.write(data)
