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


SECRET = "hunter2-db-password"


def test_secrets_never_reach_the_store_or_the_stream(tmp_path: Path, redis_url: str) -> None:
    redis = Redis.from_url(redis_url)
    store = FileLogStore(tmp_path)
    writer = LogWriter(store, redis, 104, secrets=[SECRET])
    writer.write(f"connecting with {SECRET}\n".encode())
    writer.write(b"password is hunter2-d")  # split across two writes
    writer.write(b"b-password, ok\n")
    writer.line(f"ciserver: login as {SECRET} refused")
    writer.close("failed")
    expected = b"connecting with [masked]\npassword is [masked], ok\nciserver: login as [masked] refused\n"
    assert store.read(104) == expected
    chunks = [(int(e[b"o"]), e[b"d"]) for e in stream_entries(redis, 104)[:-1]]
    assert b"".join(d for _, d in chunks) == expected
    assert SECRET.encode() not in b"".join(d for _, d in chunks)
    offset = 0
    for start, data in chunks:
        assert start == offset, "offsets count the masked bytes actually kept"
        offset += len(data)
    assert store.read(104, offset=chunks[1][0]) == expected[chunks[1][0] :]


def test_a_secret_split_by_the_forced_cut_of_a_long_line_is_masked(tmp_path: Path, redis_url: str) -> None:
    redis = Redis.from_url(redis_url)
    store = FileLogStore(tmp_path)
    writer = LogWriter(store, redis, 105, secrets=[SECRET])
    half = len(SECRET) // 2
    writer.write(b"x" * 70_000 + SECRET[:half].encode())
    assert store.read(105) == b"x" * 70_000, "the line without end is published, all but the possible secret"
    writer.write(SECRET[half:].encode() + b" tail")
    writer.close("success")
    assert store.read(105) == b"x" * 70_000 + b"[masked] tail"
    streamed = b"".join(e[b"d"] for e in stream_entries(redis, 105)[:-1])
    assert streamed == store.read(105)


def test_a_finished_line_is_published_at_once_with_secrets_set(tmp_path: Path, redis_url: str) -> None:
    store = FileLogStore(tmp_path)
    writer = LogWriter(store, Redis.from_url(redis_url), 106, secrets=[SECRET])
    writer.write(b"step 1 done\n")
    assert store.read(106) == b"step 1 done\n", "masking does not keep a live log waiting"
    writer.close("success")
