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


def lines(first: int, last: int) -> bytes:
    return b"".join(b"line %06d\n" % i for i in range(first, last))  # 12 bytes each


def test_a_log_over_the_cap_keeps_its_head_and_tail_with_a_line_saying_what_was_cut(
    tmp_path: Path, redis_url: str
) -> None:
    redis = Redis.from_url(redis_url)
    store = FileLogStore(tmp_path / "logs")
    writer = LogWriter(store, redis, 107, max_bytes=12_000, spill_dir=tmp_path / "spill")
    for i in range(0, 100_000, 100):  # 1.2 MB in chunks of 100 lines
        writer.write(lines(i, i + 100))
    assert store.size(107) <= 6000, "past the head nothing is published while the job runs"
    writer.line("ciserver: exit code 1")
    writer.close("failed")
    log = store.read(107)
    head, marker, tail = log.split(b"\n[")[0] + b"\n", *log.split(b"\n[")[1].split(b"]\n", 1)
    assert head == lines(0, 500), "whole lines, the first 6,000 bytes"
    output = lines(0, 100_000) + b"ciserver: exit code 1\n"
    assert len(tail) <= 6000 and output.endswith(tail), "the last bytes of the output"
    assert output[-len(tail) - 1 :].startswith(b"\n"), "from a whole line on"
    cut = 100_000 * 12 + 22 - len(head) - len(tail)
    assert (
        marker
        == (
            f"ciserver: {cut:,} bytes of output cut here: the log keeps the first 6,000 and the last "
            "6,000 bytes of each attempt (CISERVER_LOG_MAX_BYTES)"
        ).encode()
    )
    streamed = [(int(e[b"o"]), e[b"d"]) for e in stream_entries(redis, 107)[:-1]]
    assert b"".join(d for _, d in streamed) == log, "the live stream and the store agree"
    offset = 0
    for start, data in streamed:
        assert start == offset
        offset += len(data)
    assert list((tmp_path / "spill").iterdir()) == [], "the tail's file is gone"


def test_output_within_the_cap_is_kept_whole_without_a_marker(tmp_path: Path) -> None:
    store = FileLogStore(tmp_path)
    writer = LogWriter(store, None, 108, max_bytes=12_000)
    writer.write(lines(0, 900))  # 10,800 bytes: over the head, within the cap
    writer.close("success")
    assert store.read(108) == lines(0, 900)


def test_a_secret_is_masked_before_the_cap_counts(tmp_path: Path) -> None:
    store = FileLogStore(tmp_path)
    writer = LogWriter(store, None, 109, secrets=[SECRET], max_bytes=4096)
    writer.write((SECRET + "\n").encode() * 10_000)
    writer.close("success")
    log = store.read(109)
    assert SECRET.encode() not in log and len(log) < 4096 + 200
