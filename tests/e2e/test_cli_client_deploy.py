"""The CLI client's release commands against a deploying server: environments, promote (refused to a
viewer, with the role named), deployment --follow until the end, rollback, deployments, and pause,
resume and abort of a rollout under way. Script deploys keep it quick: each step runs a real container
of the script, and the canary's interval is waited between steps."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from ciserver.ports import free_port
from tests.support.cli_client import run_client, start_client
from tests.support.engine import BUSYBOX
from tests.support.git import commit, make_repo
from tests.support.pipelines import PACKAGE_RELEASE
from tests.support.server import CiServer, deploying_server
from tests.support.services import RedisServer

# One database is enough here: the client speaks HTTP to the API, the same whatever the database.
ONE_DATABASE = True

PROJECT = "acme/cli-deploy"

PIPELINE = f"""\
image: {BUSYBOX}
jobs:
  unit: {{script: ["true"]}}
environments:
  staging:
    auto: true
    script: ['echo "staging at $DEPLOY_WEIGHT% of $CI_COMMIT_SHA"']
  production:
    after: staging
    script: ['echo "production at $DEPLOY_WEIGHT%"']
    strategy: {{canary: {{steps: [50], interval: 2s}}}}
  slow:
    script: ['echo "slow at $DEPLOY_WEIGHT%"']
    strategy: {{canary: {{steps: [50], interval: 120s}}}}
"""


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, busybox_image: str, e2e_database: str
) -> Iterator[CiServer]:
    """A deploying server on a Redis of its own (its workers take only this module's work)."""
    root = tmp_path_factory.mktemp("cli-deploy")
    redis = RedisServer(root / "redis").start()
    try:
        with deploying_server(root, redis.url, workers=2) as running:
            running.add_project(PROJECT, _repo(root / "repo"))
            yield running
    finally:
        redis.stop()


def _repo(path: Path) -> Path:
    make_repo(path, {"pipelines.yml": PIPELINE, "NOTE": "v1"})
    return path


def push(server: CiServer, note: str) -> tuple[int, str]:
    """A new commit pushed and built green; waits until staging runs it."""
    sha = commit(server.root / "repo", {"NOTE": note}, note)
    response = server.push_github(PROJECT, sha)
    assert response.status_code == 202, response.text
    build_id = int(response.json()["build_id"])
    assert server.wait_build(build_id)["status"] == "success"
    wait(lambda: (environment(server, "staging").get("release") or {}).get("sha") == sha)
    return build_id, sha


def environment(server: CiServer, name: str) -> dict[str, Any]:
    found = server.http.get(f"/api/v1/projects/{PROJECT}/environments").json()
    return next((env for env in found if env["name"] == name), {})


def deployment(server: CiServer, deployment_id: int) -> dict[str, Any]:
    return server.http.get(f"/api/v1/deployments/{deployment_id}").json()


def wait(done: Any, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.2)


def started_id(output: str) -> int:
    """The deployment id of `promote` or `rollback`'s first line: `deployment N of ... started; ...`."""
    first = output.splitlines()[0]
    assert first.startswith("deployment ") and " started; follow it with: ciserver deployment " in first, (
        first
    )
    return int(first.split()[1])


def test_promote_follow_rollback_and_a_viewer_refused(server: CiServer, tmp_path: Path) -> None:
    b1, v1 = push(server, "v1")
    table = run_client(server, tmp_path, "environments", PROJECT)
    assert table.returncode == 0, table.stderr
    rows = {line.split()[0]: line.split() for line in table.stdout.splitlines()[2:] if line.strip()}
    assert rows["staging"][3:5] == [str(b1), v1[:8]]
    assert rows["production"][3] == "-"

    refusals = {
        "viewer": "this needs the developer role; the token has viewer",
        "developer": "deployments of environment 'production' need the ops role (its promote_role); "
        "the token has developer",
    }
    for role, why in refusals.items():
        refused = run_client(
            server, tmp_path, "promote", PROJECT, "production", str(b1), token=server.token_for(role)
        )
        assert (refused.returncode, refused.stderr) == (2, f"error: not allowed (403): {why}\n")

    ops = server.token_for("ops")
    first = run_client(server, tmp_path, "promote", PROJECT, "production", str(b1), "--follow", token=ops)
    assert first.returncode == 0, first.stderr
    d1 = started_id(first.stdout)
    assert "  step 1: weight 50%, script exited 0" in first.stdout
    assert first.stdout.splitlines()[-1] == f"deployment {d1}: succeeded, weight 100%"

    b2, v2 = push(server, "v2")
    second = run_client(server, tmp_path, "promote", PROJECT, "production", str(b2), token=ops)
    d2 = started_id(second.stdout)
    followed = run_client(server, tmp_path, "deployment", str(d2), "--follow")
    assert followed.returncode == 0, followed.stderr
    assert followed.stdout.splitlines()[-1] == f"deployment {d2}: succeeded, weight 100%"
    assert environment(server, "production")["release"]["sha"] == v2

    back = run_client(server, tmp_path, "rollback", PROJECT, "production", token=ops)
    assert back.returncode == 0, back.stderr
    d3 = started_id(back.stdout)
    assert f"deployment {d3} of build {b1} back to production started" in back.stdout
    as_json = run_client(server, tmp_path, "deployment", str(d3), "--follow", "--json")
    assert as_json.returncode == 0, as_json.stderr
    states = [json.loads(line) for line in as_json.stdout.splitlines()]
    assert states[-1]["status"] == "succeeded" and states[-1]["action"] == "rollback"
    assert environment(server, "production")["release"]["sha"] == v1

    listed = run_client(server, tmp_path, "deployments", PROJECT, "--environment", "production", "--json")
    assert [(d["id"], d["action"], d["status"]) for d in json.loads(listed.stdout)][:3] == [
        (d3, "rollback", "succeeded"),
        (d2, "promote", "succeeded"),
        (d1, "promote", "succeeded"),
    ]
    table = run_client(server, tmp_path, "deployments", PROJECT)
    row = next(line.split() for line in table.stdout.splitlines() if line.split()[:1] == [str(d3)])
    assert row[1:7] == ["production", str(b1), v1[:8], "rollback", "canary", "succeeded"]

    shown = run_client(server, tmp_path, "deployment", str(d3))
    assert shown.stdout.splitlines()[0].startswith(
        f"deployment {d3} {PROJECT} production: build {b1} {v1[:12]}"
    )


def rollout_to_slow(server: CiServer, tmp_path: Path, note: str, ops: str) -> tuple[int, Any]:
    """A new build promoted to `slow`, followed by `deployment --follow` from the start, once it waits
    out its canary interval at 50%."""
    build_id, _ = push(server, note)
    promoted = run_client(server, tmp_path, "promote", PROJECT, "slow", str(build_id), token=ops)
    rollout = started_id(promoted.stdout)
    follower = start_client(server, tmp_path, "deployment", str(rollout), "--follow")
    wait(lambda: deployment(server, rollout)["weight"] == 50)
    return rollout, follower


def test_pause_and_resume_a_rollout_while_deployment_follow_tells_it(
    server: CiServer, tmp_path: Path
) -> None:
    ops = server.token_for("ops")
    rollout, follower = rollout_to_slow(server, tmp_path, "paused one", ops)

    paused = run_client(server, tmp_path, "pause", str(rollout), token=ops)
    assert paused.returncode == 0, paused.stderr
    assert paused.stdout.startswith(f"deployment {rollout} pause asked; it is ")
    wait(lambda: deployment(server, rollout)["status"] == "paused")
    shown = run_client(server, tmp_path, "deployment", str(rollout))
    assert "paused" in shown.stdout.splitlines()[0]
    again = run_client(server, tmp_path, "pause", str(rollout), token=ops)
    assert again.returncode == 2
    assert f"deployment {rollout} is paused: it cannot be paused now (409)" in again.stderr

    resumed = run_client(server, tmp_path, "resume", str(rollout), token=ops)
    assert resumed.returncode == 0 and "it is progressing" in resumed.stdout
    out, err = follower.communicate(timeout=60)
    assert follower.returncode == 0, err
    lines = out.splitlines()
    assert lines.index(f"deployment {rollout}: paused, weight 50%") < lines.index(
        "  step 2: weight 100%, script exited 0"
    )
    assert lines[-1] == f"deployment {rollout}: succeeded, weight 100%"


def test_abort_a_rollout_and_deployment_follow_exits_1(server: CiServer, tmp_path: Path) -> None:
    ops = server.token_for("ops")
    rollout, follower = rollout_to_slow(server, tmp_path, "aborted one", ops)
    aborted = run_client(server, tmp_path, "abort", str(rollout), token=ops)
    assert aborted.returncode == 0, aborted.stderr
    out, err = follower.communicate(timeout=60)
    assert follower.returncode == 1, err
    last = out.splitlines()[-1]
    assert last.startswith(f"deployment {rollout}: failed, weight 50%: aborted by token:"), out


CANARY = "acme/cli-canary"
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "hello"


def canary_pipeline(port: int) -> str:
    return f"""\
{PACKAGE_RELEASE}environments:
  production:
    auto: false
    listen: 127.0.0.1:{port}
    strategy: {{canary: {{steps: [50, 100], interval: 4s, max_error_rate: 0.5, min_requests: 5}}}}
service: {{port: 8000, health: /healthz, health_timeout: 30s}}
"""


def test_deployment_follow_tells_a_canary_s_requests_and_errors_under_real_traffic(
    server: CiServer, tmp_path: Path
) -> None:
    port = free_port()
    repo = tmp_path / "hello"
    files = {name: (EXAMPLE / name).read_text() for name in ("app.py", "Dockerfile")}
    make_repo(repo, {**files, "pipelines.yml": canary_pipeline(port)})
    server.add_project(CANARY, repo)
    builds = []
    for note in ("v1", "v2"):
        sha = commit(repo, {"NOTE": note}, note)
        response = server.push_github(CANARY, sha)
        assert response.status_code == 202, response.text
        builds.append(int(response.json()["build_id"]))
        assert server.wait_build(builds[-1], timeout=180)["status"] == "success"
    first = run_client(server, tmp_path, "promote", CANARY, "production", str(builds[0]), "--follow")
    assert first.returncode == 0, first.stdout + first.stderr

    done = threading.Event()

    def traffic() -> None:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=5) as client:
            while not done.is_set():
                try:
                    client.get("/")
                except httpx.HTTPError:
                    pass
                time.sleep(0.01)

    sender = threading.Thread(target=traffic)
    sender.start()
    try:
        second = run_client(server, tmp_path, "promote", CANARY, "production", str(builds[1]), "--follow")
    finally:
        done.set()
        sender.join(10)
    assert second.returncode == 0, second.stdout + second.stderr
    step = next(line for line in second.stdout.splitlines() if line.startswith("  step 1: weight 50%, "))
    requests, errors = int(step.split(", ")[1].split()[0]), int(step.split(", ")[2].split()[0])
    assert requests > 20 and errors == 0, step
    analysed = deployment(server, started_id(second.stdout))["steps"][0]
    assert (analysed["requests"], analysed["errors"]) == (requests, errors)
    assert second.stdout.splitlines()[-1] == f"deployment {started_id(second.stdout)}: succeeded, weight 100%"
