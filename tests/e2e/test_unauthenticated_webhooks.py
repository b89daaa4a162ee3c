"""What a webhook costs someone who cannot sign it, and a project's own webhook URL, against a real
`ciserver serve` (and real workers, Redis, git and Docker for the build)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import httpx

from tests.support.engine import BUSYBOX
from tests.support.git import make_repo
from tests.support.payloads import WEBHOOK_SECRET as SECRET
from tests.support.payloads import github_headers, github_push_body
from tests.support.server import CiServer

MIB = 1024 * 1024


def nested_arrays(size: int, prefix: bytes = b"") -> bytes:
    """Valid JSON of `size` bytes made of arrays nested 500 deep: parsed, each pair of brackets is a
    list object, a gigabyte for 25 MiB."""
    unit = b"[" * 500 + b"]" * 500
    count = (size - len(prefix) - 16) // (len(unit) + 1)
    return prefix + b"[" + b",".join([unit] * count) + b"]" + (b"}" if prefix else b"")


def peak_rss(pid: int) -> int:
    """The process's high-water mark of resident memory, in bytes (VmHWM)."""
    status = Path(f"/proc/{pid}/status").read_text()
    match = re.search(r"^VmHWM:\s+(\d+) kB", status, re.MULTILINE)
    assert match is not None
    return int(match.group(1)) * 1024


def test_unsigned_25_mib_bodies_are_refused_on_both_urls_without_being_parsed(
    tmp_path: Path, redis_url: str
) -> None:
    server = CiServer(tmp_path, redis_url)
    server.start(workers=0)
    try:
        repo = tmp_path / "repo"
        make_repo(repo, {"README": "hello\n"})
        server.add_project("octo/hello", repo, secret=SECRET)
        assert server.api is not None
        before = peak_rss(server.api.pid)
        named = b'{"repository": {"full_name": "octo/hello"}, "commits": '
        bodies = {
            "nested": nested_arrays(25 * MIB),
            "nested, naming the project": nested_arrays(25 * MIB, named),
        }
        for url in ("/webhooks/github", "/webhooks/github/octo/hello"):
            for kind, body in bodies.items():
                headers = github_headers(body, "not-the-secret")
                response = server.http.post(url, content=body, headers=headers, timeout=60)
                assert response.status_code == 401, f"{url}, {kind}: {response.text}"
        grown = peak_rss(server.api.pid) - before
        # One body read at a time, none kept: parsing one of them alone costs over a gigabyte.
        assert grown < 100 * MIB, f"the API's peak memory grew by {grown // MIB} MiB"
    finally:
        server.stop()


PIPELINE = f"""\
image: {BUSYBOX}
jobs:
  hello: {{script: ["echo built from the project URL"]}}
"""


def test_a_signed_push_on_the_url_project_add_prints_builds_green(ciserver: CiServer, tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    sha = make_repo(repo, {"pipelines.yml": PIPELINE})
    added = ciserver.cli("project", "add", "octo/own-url", "--repo", str(repo), "--forge", "github",
                         "--secret", SECRET).stdout  # fmt: skip
    [path] = re.findall(r"/webhooks/github/\S+", added)
    assert path == "/webhooks/github/octo/own-url"
    body = github_push_body("octo/own-url", sha)
    response = ciserver.http.post(path, content=body, headers=github_headers(body, SECRET))
    assert response.status_code == 202, response.text
    build = ciserver.wait_build(response.json()["build_id"])
    assert build["status"] == "success", build
    assert "built from the project URL" in ciserver.log(build["jobs"][0]["id"])

    other = github_push_body("octo/elsewhere", sha)
    refused = ciserver.http.post(path, content=other, headers=github_headers(other, SECRET))
    assert refused.status_code == 422 and "octo/elsewhere" in refused.json()["message"]
    assert ciserver.builds_of("octo/own-url")["total"] == 1


def test_the_project_api_gives_the_projects_own_webhook_path(ciserver: CiServer) -> None:
    created = ciserver.http.post(
        "/api/v1/projects",
        json={"name": "group/sub/app", "repo": "https://x.test/app.git", "forge": "gitlab", "secret": SECRET},
    )
    assert created.status_code == 201, created.text
    assert created.json()["webhook_path"] == "/webhooks/gitlab/group/sub/app"
    body = json.dumps({"object_kind": "push"}).encode()
    unsigned = httpx.post(ciserver.url + created.json()["webhook_path"], content=body)
    assert unsigned.status_code == 401
