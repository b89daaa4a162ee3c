"""The log writer keeps every byte in the store and publishes whole lines to a real Redis stream."""

from __future__ import annotations

from pathlib import Path

from redis import Redis

from ciserver.logs import FileLogStore, LogWriter, stream_key


def stream_entries(redis: Redis, job_id: int) -> list[dict[bytes, bytes]]:
    return [fields for _id, fields in redis.xrange(stream_key(job_id))]


def test_output_is_stored_whole_and_streamed_in_lines_with_offsets(tmp_path: Path, redis_url: str) -> None:
    redis = Redis.from_url(redis_url)
    store = FileLogStore(tmp_path)
    writer = LogWriter(store, redis, 101)
    for chunk in [b"one\ntw", b"o\nthr", b"ee"]:
        writer.write(chunk)
    assert store.read(101) == b"one\ntwo\n", "a partial line waits for its end"
    writer.close("success")
    assert store.read(101) == b"one\ntwo\nthree"
    entries = stream_entries(redis, 101)
    assert [(int(e[b"o"]), e[b"d"]) for e in entries[:-1]] == [(0, b"one\n"), (4, b"two\n"), (8, b"three")]
    assert entries[-1] == {b"end": b"success"}
    assert redis.ttl(stream_key(101)) > 0, "a finished job's stream expires"
    assert store.read(101, offset=4) == b"two\nthree"


def test_a_redis_outage_loses_nothing_from_the_store(tmp_path: Path) -> None:
    unreachable = Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.2)
    store = FileLogStore(tmp_path)
    writer = LogWriter(store, unreachable, 102)
    writer.write(b"still\nkept\n")
    writer.close("failed")
    assert store.read(102) == b"still\nkept\n"


def test_a_line_without_end_is_published_once_it_grows_large(tmp_path: Path, redis_url: str) -> None:
    redis = Redis.from_url(redis_url)
    store = FileLogStore(tmp_path)
    writer = LogWriter(store, redis, 103)
    writer.write(b"x" * 70_000)
    assert store.size(103) == 70_000
    writer.close("success")
    assert store.read(103) == b"x" * 70_000
