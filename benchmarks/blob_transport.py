#!/usr/bin/env python3
"""How job logs, artifacts and caches travel between hosts: what each way costs on this machine.

Workers on other hosts share no filesystem, so what a job keeps must reach the API and the other
workers some other way. Three ways, each timed for the same work:
- files: the data dir on one host (the embedded default), the floor;
- database: CISERVER_BLOB_STORE=database on a PostgreSQL started here as an operator runs it (fsync
  on), through ciserver's own DatabaseBlobStore and DatabaseLogStore;
- http: what a runner-to-API upload would cost at best (GitLab's way), a bare uvicorn endpoint that
  streams a PUT body to a file and serves it back, with no auth and no database.

The work: an artifact of --mib MiB written then read back, and a log of --lines lines appended in
the chunks a LogWriter publishes (about 4 KiB) then read back whole. Run from the project root:

    .venv/bin/python benchmarks/blob_transport.py [--mib 64] [--lines 200000] [--runs 3]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, Response

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ciserver.logs import FileLogStore, LogStore
from ciserver.ports import free_port
from ciserver.storage import BlobStore, FileBlobStore
from ciserver.store.blobs import DatabaseBlobStore, DatabaseLogStore
from tests.support.postgres import PostgresServer

CHUNK = 1024 * 1024
LOG_CHUNK = 4096


def http_server(root: Path) -> tuple[str, uvicorn.Server]:
    """PUT /blobs/KEY streams the body to a file; GET serves it; POST /logs/JOB appends a chunk."""
    app = FastAPI()

    @app.put("/blobs/{key}")
    async def put(key: str, request: Request) -> Response:
        with (root / key).open("wb") as out:
            async for part in request.stream():
                out.write(part)
        return Response(status_code=201)

    @app.get("/blobs/{key}")
    def get(key: str) -> FileResponse:
        return FileResponse(root / key)

    @app.post("/logs/{job}")
    async def append(job: int, request: Request) -> Response:
        with (root / f"log-{job}").open("ab") as out:
            out.write(await request.body())
        return Response(status_code=204)

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.01)
    return f"http://127.0.0.1:{port}", server


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def source_file(directory: Path, mib: int) -> Path:
    path = directory / "artifact.bin"
    with path.open("wb") as f:
        for _ in range(mib):
            f.write(os.urandom(CHUNK))
    return path


def blob_round(store: BlobStore, source: Path, key: str) -> tuple[float, float]:
    def write() -> None:
        with source.open("rb") as src, store.writer(key) as out:
            shutil.copyfileobj(src, out, CHUNK)

    def read() -> None:
        chunks = store.chunks(key)
        assert chunks is not None
        assert sum(len(c) for c in chunks) == source.stat().st_size

    return timed(write), timed(read)


def http_blob_round(client: httpx.Client, source: Path, key: str) -> tuple[float, float]:
    def body() -> Iterator[bytes]:
        with source.open("rb") as f:
            while part := f.read(CHUNK):
                yield part

    def write() -> None:
        client.put(f"/blobs/{key}", content=body()).raise_for_status()

    def read() -> None:
        with client.stream("GET", f"/blobs/{key}") as response:
            assert sum(len(c) for c in response.iter_bytes(CHUNK)) == source.stat().st_size

    return timed(write), timed(read)


def log_chunks(lines: int) -> list[bytes]:
    text = b"".join(
        b"line %08d of a chatty job, about eighty bytes long: ............\n" % n for n in range(lines)
    )
    return [text[i : i + LOG_CHUNK] for i in range(0, len(text), LOG_CHUNK)]


def log_round(store: LogStore, job: int, chunks: list[bytes]) -> tuple[float, float]:
    def write() -> None:
        for chunk in chunks:
            store.append(job, chunk)

    def read() -> None:
        assert len(store.read(job)) == sum(len(c) for c in chunks)

    return timed(write), timed(read)


def http_log_round(client: httpx.Client, job: int, chunks: list[bytes]) -> tuple[float, float]:
    def write() -> None:
        for chunk in chunks:
            client.post(f"/logs/{job}", content=chunk).raise_for_status()

    return timed(write), float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=64)
    parser.add_argument("--lines", type=int, default=200_000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="ciserver-blob-bench-"))
    postgres = PostgresServer(durable=True).start()
    try:
        url = postgres.new_database()
        http_root = work / "http"
        http_root.mkdir()
        base, server = http_server(http_root)
        client = httpx.Client(base_url=base, timeout=120)
        source = source_file(work, args.mib)
        chunks = log_chunks(args.lines)
        ways: dict[str, tuple[BlobStore | None, LogStore | None]] = {
            "files": (FileBlobStore(work / "files"), FileLogStore(work / "logs")),
            "database (PostgreSQL, fsync on)": (DatabaseBlobStore(url, "artifacts"), DatabaseLogStore(url)),
            "http (bare uvicorn, a floor)": (None, None),
        }
        results: dict[str, list[tuple[float, float, float, float]]] = {way: [] for way in ways}
        for run in range(args.runs):
            for way, (blobs, logs) in ways.items():  # in turns, so that every way sees the same load
                key, job = f"run{run}", 1000 + run
                if blobs is None:
                    bw, br = http_blob_round(client, source, key)
                    lw, lr = http_log_round(client, job, chunks)
                else:
                    assert logs is not None
                    bw, br = blob_round(blobs, source, key)
                    lw, lr = log_round(logs, job, chunks)
                results[way].append((bw, br, lw, lr))
        server.should_exit = True
        mib = args.mib
        print(
            f"\n{mib} MiB artifact, {args.lines:,} log lines in {len(chunks):,} chunks; median of {args.runs}"
        )
        print("| way | artifact write | artifact read | log append | log read |")
        print("|---|---|---|---|---|")
        for way, rows in results.items():
            bw, br, lw, lr = (statistics.median(r[i] for r in rows) for i in range(4))
            read = "n/a" if lr != lr else f"{lr * 1000:.0f} ms"
            print(
                f"| {way} | {mib / bw:,.0f} MiB/s | {mib / br:,.0f} MiB/s | "
                f"{args.lines / lw:,.0f} lines/s | {read} |"
            )
    finally:
        postgres.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
