"""A private repository behind HTTPS with basic auth, built by a real server and worker: git gets the
password through its credential helper, never in a process's arguments or a file, and a wrong one
fails the build showing the URL with stars."""

from __future__ import annotations

import subprocess
import time
import uuid
from pathlib import Path

from tests.support.git import make_repo
from tests.support.git_https import GitHttpsServer
from tests.support.server import CiServer
from tests.support.services import redis_database

# One database is enough here: credentials reach git the same way whatever the database holds them in.
ONE_DATABASE = True

WEBHOOK_SECRET = "a-webhook-secret-of-some-length"


def raw_files(root: Path) -> bytes:
    return b"".join(p.read_bytes() for p in root.rglob("*") if p.is_file() and not p.is_symlink())


def command_lines() -> dict[int, bytes]:
    lines = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                lines[int(entry.name)] = (entry / "cmdline").read_bytes()
            except OSError:
                continue  # ended meanwhile
    return lines


def test_a_private_https_repository_builds_and_no_process_argument_or_file_holds_its_password(
    tmp_path: Path, redis_url: str, busybox_image: str
) -> None:
    token = uuid.uuid4().hex
    password = f"p@ss-{token}"
    work, served = tmp_path / "work", tmp_path / "served"
    pipeline = f"image: {busybox_image}\njobs:\n  hello: {{script: ['cat README']}}\n"
    sha = make_repo(work, {"pipelines.yml": pipeline, "README": "private hello\n"})
    served.mkdir()
    subprocess.run(["git", "clone", "-q", "--bare", "--", str(work), str(served / "app.git")], check=True)

    with GitHttpsServer(served, "ci-bot", password, tmp_path / "tls") as git_server:
        server = CiServer(
            tmp_path / "ci",
            redis_database(redis_url, 11),  # its worker alone takes what is enqueued here
            GIT_SSL_CAINFO=str(git_server.cafile),
        )
        (tmp_path / "ci").mkdir()
        server.start(workers=1)
        try:
            url = git_server.url("app.git", userinfo=f"ci-bot:{password.replace('@', '%40')}")
            body = {"name": "octo/private", "forge": "github", "repo": url, "secret": WEBHOOK_SECRET}
            response = server.http.post("/api/v1/projects", json=body)
            assert response.status_code == 201, response.text
            assert response.json()["repo"] == git_server.url("app.git", userinfo="***")

            git_server.hold.set()
            build_id = server.push_github("octo/private", sha, secret=WEBHOOK_SECRET).json()["build_id"]
            assert git_server.held.wait(30), "git never reached the server with the credentials"
            holding = {pid: line for pid, line in command_lines().items() if token.encode() in line}
            git_running = [line for line in command_lines().values() if b"git" in line and b"fetch" in line]
            git_server.release.set()
            assert git_running, "no git fetch was running while the request was held"
            assert holding == {}, holding

            build = server.wait_build(build_id, timeout=60)
            assert build["status"] == "success", build
            assert "private hello" in server.log(build["jobs"][0]["id"])
            assert token.encode() not in raw_files(server.root / "data")
        finally:
            server.stop()


def test_a_wrong_password_fails_the_build_showing_the_url_with_stars(
    tmp_path: Path, redis_url: str, busybox_image: str
) -> None:
    work, served = tmp_path / "work", tmp_path / "served"
    sha = make_repo(work, {"pipelines.yml": f"image: {busybox_image}\njobs:\n  a: {{script: ['true']}}\n"})
    served.mkdir()
    subprocess.run(["git", "clone", "-q", "--bare", "--", str(work), str(served / "app.git")], check=True)
    with GitHttpsServer(served, "ci-bot", "the-right-one", tmp_path / "tls") as git_server:
        server = CiServer(
            tmp_path / "ci", redis_database(redis_url, 11), GIT_SSL_CAINFO=str(git_server.cafile)
        )
        (tmp_path / "ci").mkdir()
        server.start(workers=1)
        try:
            url = git_server.url("app.git", userinfo="ci-bot:not-the-right-one")
            body = {"name": "octo/wrong", "forge": "github", "repo": url, "secret": WEBHOOK_SECRET}
            assert server.http.post("/api/v1/projects", json=body).status_code == 201
            start = time.monotonic()
            build = server.wait_build(
                server.push_github("octo/wrong", sha, secret=WEBHOOK_SECRET).json()["build_id"]
            )
            assert build["status"] == "error" and time.monotonic() - start < 30, build
            assert git_server.url("app.git", userinfo="***") in build["error"], build["error"]
            assert "not-the-right-one" not in build["error"]
        finally:
            server.stop()
