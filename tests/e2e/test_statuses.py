"""A real push to a real server shows its build on the forge: pending, then the outcome, for the pipeline
and (GitHub, Gitea) each job, linking to the build's page; a restart of the API between the change and
the report still reports it; and a forge that hangs leaves the build's own timing as it was. The
forge's API is a fake on loopback; everything else is real (git, Redis, Docker, worker processes)."""

from __future__ import annotations

import hashlib
import hmac
import json
import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from tests.support.engine import BUSYBOX
from tests.support.fake_forge import Answer, FakeForge, fake_forge
from tests.support.git import make_repo
from tests.support.payloads import WEBHOOK_SECRET
from tests.support.pipelines import HELLO_THEN_PACKAGE
from tests.support.server import CiServer
from tests.support.services import redis_database

PUBLIC_URL = "https://ci.example"
PIPELINE = HELLO_THEN_PACKAGE
SLOW = f"""\
image: {BUSYBOX}
jobs:
  slow:
    script: [sleep 2]
"""


@pytest.fixture(scope="module")
def forge() -> Iterator[FakeForge]:
    with fake_forge() as forge:
        yield forge


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, redis_url: str, busybox_image: str, e2e_database: str
) -> Iterator[CiServer]:
    root = tmp_path_factory.mktemp("statuses")
    server = CiServer(
        root,
        redis_database(redis_url, 15),  # its workers take only its own builds
        CISERVER_PUBLIC_URL=PUBLIC_URL,
        CISERVER_STATUS_INTERVAL="0.2",
        CISERVER_STATUS_BACKOFF="0.2",
        CISERVER_STATUS_TIMEOUT="1",
    )
    server.start(workers=2)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(autouse=True)
def answering(forge: FakeForge) -> None:
    forge.default = Answer()


def registered(
    server: CiServer, forge: FakeForge, tmp_path: Path, kind: str, pipeline: str = PIPELINE
) -> tuple[str, str]:
    name = f"octo/s{uuid.uuid4().hex[:10]}"
    sha = make_repo(tmp_path / "repo", {"pipelines.yml": pipeline})
    server.add_project(name, tmp_path / "repo", forge=kind)
    token = tmp_path / "forge-token"
    token.write_text(f"token-of-{name}\n")
    server.cli(
        "project", "update", name, "--forge-url", f"{forge.url}/{kind}", "--forge-token-file", str(token)
    )
    return name, sha


def calls_for(forge: FakeForge, sha: str) -> list[dict[str, Any]]:
    return [{"path": c.path, "headers": c.headers, **c.body} for c in forge.calls if sha in c.path]


def last_states(forge: FakeForge, sha: str, key: str = "context") -> dict[str, str]:
    last: dict[str, str] = {}
    for call in calls_for(forge, sha):
        last[call[key]] = call["state"]
    return last


def test_a_github_push_shows_pending_then_success_for_the_pipeline_and_each_job(
    server: CiServer, forge: FakeForge, tmp_path: Path
) -> None:
    name, sha = registered(server, forge, tmp_path, "github")
    answer = server.push_github(name, sha)
    assert answer.status_code == 202, answer.text
    build_id = answer.json()["build_id"]
    assert server.wait_build(build_id)["status"] == "success"
    wanted = {"ciserver": "success", "ciserver/hello": "success", "ciserver/package": "success"}
    forge.wait_for(lambda _: last_states(forge, sha) == wanted)

    calls = calls_for(forge, sha)
    pipeline = [call for call in calls if call["context"] == "ciserver"]
    assert pipeline[0]["state"] == "pending"
    assert pipeline[-1]["description"].startswith("passed in ")
    assert {call["path"] for call in calls} == {f"/github/repos/{name}/statuses/{sha}"}
    assert {call["headers"]["Authorization"] for call in calls} == {f"Bearer token-of-{name}"}
    assert {call["target_url"] for call in calls} == {f"{PUBLIC_URL}/builds/{build_id}"}
    # The package job waited for hello: its status said so while it did.
    package = [call["description"] for call in calls if call["context"] == "ciserver/package"]
    assert package[-1].startswith("passed") and all(len(d) <= 140 for d in package)

    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        shown = server.build(build_id)["statuses"]
        if all(status["sent"] for status in shown) and len(shown) == 3:
            break
        time.sleep(0.1)
    assert [(s["context"], s["state"], s["sent"], s["error"]) for s in shown] == [
        ("ciserver", "success", True, None),
        ("ciserver/hello", "success", True, None),
        ("ciserver/package", "success", True, None),
    ]
    assert f"token-of-{name}" not in json.dumps(server.http.get(f"/api/v1/projects/{name}").json())


def test_a_gitlab_push_shows_running_then_success_as_one_status(
    server: CiServer, forge: FakeForge, tmp_path: Path
) -> None:
    name, sha = registered(server, forge, tmp_path, "gitlab")
    answer = server.push_gitlab(name, sha)
    assert answer.status_code == 202, answer.text
    assert server.wait_build(answer.json()["build_id"])["status"] == "success"
    forge.wait_for(lambda _: last_states(forge, sha, "name") == {"ciserver": "success"})
    calls = calls_for(forge, sha)
    assert {call["path"] for call in calls} == {f"/gitlab/projects/{name.replace('/', '%2F')}/statuses/{sha}"}
    assert {call["headers"]["PRIVATE-TOKEN"] for call in calls} == {f"token-of-{name}"}
    assert {call["ref"] for call in calls} == {"main"}


def test_a_signed_gitea_push_builds_and_shows_its_statuses(
    server: CiServer, forge: FakeForge, tmp_path: Path
) -> None:
    name, sha = registered(server, forge, tmp_path, "gitea")
    body = json.dumps(
        {
            "ref": "refs/heads/main",
            "before": "0" * 40,
            "after": sha,
            "commits": [{"id": sha, "message": "first commit\n", "added": ["pipelines.yml"], "removed": [],
                         "modified": []}],
            "repository": {"full_name": name, "name": name.split("/")[1], "default_branch": "main"},
            "pusher": {"login": "dev", "username": "dev"},
        }
    ).encode()  # fmt: skip
    signature = hmac.new(WEBHOOK_SECRET.encode(), body, hashlib.sha256).hexdigest()
    headers = {
        "Content-Type": "application/json",
        "X-Gitea-Event": "push",
        "X-Gitea-Delivery": str(uuid.uuid4()),
        "X-Gitea-Signature": signature,
    }
    answer = server.http.post(f"/webhooks/gitea/{name}", content=body, headers=headers)
    assert answer.status_code == 202, answer.text
    assert server.wait_build(answer.json()["build_id"])["status"] == "success"
    wanted = {"ciserver": "success", "ciserver/hello": "success", "ciserver/package": "success"}
    forge.wait_for(lambda _: last_states(forge, sha) == wanted)
    assert {call["headers"]["Authorization"] for call in calls_for(forge, sha)} == {f"token token-of-{name}"}


def test_a_build_that_ends_while_the_api_is_down_is_reported_once_it_is_back(
    server: CiServer, forge: FakeForge, tmp_path: Path
) -> None:
    name, sha = registered(server, forge, tmp_path, "github", SLOW)
    answer = server.push_github(name, sha)
    build_id = answer.json()["build_id"]
    assert server.api is not None
    server.api.send_signal(signal.SIGTERM)
    server.api.wait(15)
    engine = sa.create_engine(server.db_url)
    try:
        deadline = time.monotonic() + 60
        query = sa.text("SELECT status FROM builds WHERE id = :id")
        while time.monotonic() < deadline:
            with engine.connect() as connection:
                if connection.execute(query, {"id": build_id}).scalar() == "success":
                    break
            time.sleep(0.2)
    finally:
        engine.dispose()
    assert last_states(forge, sha).get("ciserver") != "success"  # nobody could have sent it
    server.start_api()
    forge.wait_for(lambda _: last_states(forge, sha) == {"ciserver": "success", "ciserver/slow": "success"})


def test_a_forge_that_hangs_leaves_the_builds_timing_as_it_was(
    server: CiServer, forge: FakeForge, tmp_path: Path
) -> None:
    def took(build: dict[str, Any]) -> float:
        from datetime import datetime

        return (
            datetime.fromisoformat(build["finished_at"]) - datetime.fromisoformat(build["created_at"])
        ).total_seconds()

    name, sha = registered(server, forge, tmp_path, "github")
    build_id = server.push_github(name, sha).json()["build_id"]
    answering = server.wait_build(build_id)
    assert answering["status"] == "success"

    forge.default = Answer(delay=30)  # accepts the connection and never answers in time
    other = tmp_path / "other"
    other.mkdir()
    name, sha = registered(server, forge, other, "github")
    started = time.monotonic()
    build_id = server.push_github(name, sha).json()["build_id"]
    hanging = server.wait_build(build_id)
    waited = time.monotonic() - started
    assert hanging["status"] == "success"
    assert took(hanging) < took(answering) + 1.5, (took(hanging), took(answering))
    assert waited < took(answering) + 5
    # The reporter, held up by the hanging forge (a timeout per call), takes the new build's
    # statuses on afterwards: they are there, none of them delivered.
    deadline = time.monotonic() + 15
    while not (statuses := server.build(build_id)["statuses"]) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert statuses and not any(status["sent"] for status in statuses)
