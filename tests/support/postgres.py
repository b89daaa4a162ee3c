"""A private PostgreSQL server for a test run (Debian's `postgresql` binaries), and a fresh database in
it for each test: the store must behave the same on it as on SQLite."""

from __future__ import annotations

import itertools
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import psycopg

from ciserver.ports import free_port

MISSING = "PostgreSQL is not installed (apt-get install postgresql)"


def _bin_dir() -> Path:
    """Where initdb and pg_ctl are: on PATH, else Debian's versioned directory (not on PATH there)."""
    found = shutil.which("pg_ctl")
    if found:
        return Path(found).parent
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"), key=lambda p: int(p.parts[-3]))
    if not versions:
        raise AssertionError(MISSING)
    return versions[-1].parent


class PostgresServer:
    """initdb into a directory of its own, started on a free loopback port with fsync off (a test's data
    need not survive a crash) unless `durable`. The server refuses to run as root, so under root (as CI
    runs) it runs as the `postgres` system user the package creates."""

    def __init__(self, *, durable: bool = False) -> None:
        self.durable = durable  # a server as an operator runs it (fsync on), for benchmarks
        self.bin = _bin_dir()
        self.user = "postgres" if os.geteuid() == 0 else None
        # Not under pytest's tmp dir: that is private to root, and the server may run as another user.
        self.directory = Path(tempfile.mkdtemp(prefix="ciserver-pg-"))
        self.port = free_port()
        self._names = itertools.count(1)

    def _run(self, *argv: str) -> None:
        result = subprocess.run(
            [str(self.bin / argv[0]), *argv[1:]], user=self.user, cwd=self.directory,
            capture_output=True, text=True,
        )  # fmt: skip
        if result.returncode != 0:
            log = self.directory / "server.log"
            raise AssertionError(
                f"{argv[0]} failed: {result.stderr}{log.read_text() if log.exists() else ''}"
            )

    def start(self) -> PostgresServer:
        try:
            return self._start()
        except BaseException:
            shutil.rmtree(self.directory, ignore_errors=True)
            raise

    def _start(self) -> PostgresServer:
        if self.user is not None:
            shutil.chown(self.directory, self.user)
        data = self.directory / "data"
        self._run("initdb", "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync")
        options = f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.directory} -c max_connections=300"
        if not self.durable:
            options += " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        self._run(
            "pg_ctl", "-D", str(data), "-l", str(self.directory / "server.log"), "-o", options, "-w", "start"
        )
        return self

    def stop(self) -> None:
        try:
            self._run("pg_ctl", "-D", str(self.directory / "data"), "-m", "immediate", "-w", "stop")
        finally:
            shutil.rmtree(self.directory, ignore_errors=True)

    def url(self, database: str) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"

    def _admin(self, statement: str) -> None:
        with psycopg.connect(
            f"host=127.0.0.1 port={self.port} user=postgres dbname=postgres", autocommit=True
        ) as c:
            c.execute(statement)

    def new_database(self) -> str:
        """The URL of a new, empty database (a copy of template1: fast, and nothing left by another test)."""
        name = f"test_{next(self._names)}"
        self._admin(f"CREATE DATABASE {name}")
        return self.url(name)

    def drop_database(self, url: str) -> None:
        """Drop a test's database, ending the connections its engine still holds in its pool."""
        self._admin(f"DROP DATABASE IF EXISTS {url.rsplit('/', 1)[1]} WITH (FORCE)")
