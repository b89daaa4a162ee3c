"""Ops stop an environment, for real: the deploy worker removes its containers and its nginx route so
nothing answers at its address, the environments API says who stopped it and when, the audit log has
it, and a promote starts it again. The CLI stops it too."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from ciserver.ports import free_port
from tests.support.git import commit, make_repo
from tests.support.pipelines import PACKAGE_RELEASE
from tests.support.server import CiServer, deploying_server
from tests.support.services import redis_database

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "hello"
PROJECT = "acme/stoppable"
STAGING = f"/api/v1/projects/{PROJECT}/environments/staging"


def pipeline(port: int) -> str:
    return f"""\
{PACKAGE_RELEASE}environments:
  staging: {{auto: true, listen: "127.0.0.1:{port}", strategy: {{blue_green: {{keep_previous: 1h}}}}}}
service: {{port: 8000, health: /healthz, health_timeout: 30s}}
"""


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, redis_url: str, busybox_image: str
) -> Iterator[CiServer]:
    root = tmp_path_factory.mktemp("stop")
    with deploying_server(root, redis_database(redis_url, 5), workers=2) as server:
        yield server


def containers(server: CiServer) -> list[str]:
    """The ids of the staging environment's containers on the engine, running or not."""
    labels = [f"label=ciserver.deploy={server.root / 'data'}", "label=ciserver.environment=staging"]
    filters = [arg for label in labels for arg in ("--filter", label)]
    found = subprocess.run(["docker", "ps", "-aq", *filters], capture_output=True, text=True, check=True)
    return found.stdout.split()


def staging(server: CiServer) -> dict[str, Any]:
    answer = server.http.get(f"/api/v1/projects/{PROJECT}/environments")
    assert answer.status_code == 200, answer.text
    return next(env for env in answer.json() if env["name"] == "staging")


def wait_deployment(server: CiServer, deployment_id: int, timeout: float = 90) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = server.http.get(f"/api/v1/deployments/{deployment_id}").json()
        if found["status"] in ("succeeded", "failed", "rolled_back"):
            return found
        time.sleep(0.2)
    raise AssertionError(f"deployment {deployment_id} did not end: {found}")


def serves(url: str) -> bool:
    try:
        return httpx.get(url, timeout=5).text.startswith("hello ")
    except httpx.TransportError:
        return False


def test_ops_stop_an_environment_and_a_promote_starts_it_again(server: CiServer, tmp_path: Path) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    repo = tmp_path / "repo"
    files = {name: (EXAMPLE / name).read_text() for name in ("app.py", "Dockerfile")}
    make_repo(repo, {**files, "pipelines.yml": pipeline(port)})
    server.add_project(PROJECT, repo)
    sha = commit(repo, {"NOTE": "v1"}, "v1")
    pushed = server.push_github(PROJECT, sha)
    assert pushed.status_code == 202, pushed.text
    build_id = pushed.json()["build_id"]
    assert server.wait_build(build_id, timeout=120)["status"] == "success"
    first = staging(server)["latest_deployment"]
    assert wait_deployment(server, first["id"])["status"] == "succeeded"
    assert serves(url) and containers(server)

    developer = {"Authorization": f"Bearer {server.token_for('developer')}"}
    refused = server.http.post(f"{STAGING}/stop", headers=developer)
    assert refused.status_code == 403 and "ops" in refused.text
    ops_token = server.token_for("ops")
    stopped = server.http.post(f"{STAGING}/stop", headers={"Authorization": f"Bearer {ops_token}"})
    assert stopped.status_code == 202, stopped.text
    assert stopped.json()["action"] == "stop"
    assert wait_deployment(server, stopped.json()["id"])["status"] == "succeeded"

    assert not serves(url), "nginx no longer answers at the environment's address"
    with pytest.raises(httpx.ConnectError):
        httpx.get(url, timeout=5)
    assert containers(server) == [], "both colors and their network are gone"
    shown = staging(server)
    assert shown["release"] is None and shown["since"] is None
    assert shown["stopped_by"].startswith("token:") and shown["stopped_at"] is not None
    again = server.http.post(f"{STAGING}/stop", headers={"Authorization": f"Bearer {ops_token}"})
    assert again.status_code == 409 and "runs nothing" in again.text
    assert ("environment.stop", f"project:{PROJECT}/environment:staging") in [
        (action, target) for _actor, action, target in server.audit()
    ]

    promoted = server.http.post(f"{STAGING}/promote", json={"build_id": build_id})
    assert promoted.status_code == 202, promoted.text
    assert wait_deployment(server, promoted.json()["id"])["status"] == "succeeded"
    assert serves(url) and containers(server)
    shown = staging(server)
    assert shown["release"]["sha"] == sha and shown["stopped_by"] is None

    by_cli = server.cli("environment", "stop", PROJECT, "staging")
    assert "stop recorded as deployment" in by_cli.stdout
    stop_id = int(by_cli.stdout.split("deployment ")[1].split(";")[0])
    assert wait_deployment(server, stop_id)["status"] == "succeeded"
    assert not serves(url) and containers(server) == []
    assert staging(server)["stopped_by"].startswith("cli:")
    assert "runs nothing: stopped by cli:" in server.cli("environment", "list", PROJECT).stdout
    refused_cli = server.cli("environment", "stop", PROJECT, "staging", check=False)
    assert refused_cli.returncode == 2 and "runs nothing" in refused_cli.stderr
