"""Delivery and deployment end to end: real pushes build the sample service (examples/hello), its
releases go through staging (continuous deployment, blue-green) and production (continuous
delivery, canary), with real containers, a real nginx and real requests through it."""

from __future__ import annotations

import subprocess
import threading
import time
from collections import Counter
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
from workers.executors.docker_service import container_name

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "hello"
PROJECT = "acme/hello"
INTERVAL = 12  # seconds per canary step: long enough to send 1,000 requests at the 5% step


def pipeline(staging: int, production: int, *, failing: bool = False) -> str:
    service_env = '{HELLO_FAIL: "1"}' if failing else "{}"
    return f"""\
{PACKAGE_RELEASE}environments:
  staging:
    auto: true
    listen: 127.0.0.1:{staging}
    strategy: {{blue_green: {{keep_previous: 3s}}}}
  production:
    after: staging
    branches: [main, "feature/*"]
    listen: 127.0.0.1:{production}
    strategy: {{canary: {{steps: [5, 100], interval: {INTERVAL}s, max_error_rate: 0.01, min_requests: 50}}}}
service: {{port: 8000, health: /healthz, health_timeout: 30s, env: {service_env}}}
"""


class Deployer:
    """The server, its nginx, the sample repository and the two environments' addresses."""

    def __init__(self, server: CiServer, repo: Path, staging: int, production: int) -> None:
        self.server, self.repo = server, repo
        self.staging, self.production = f"http://127.0.0.1:{staging}", f"http://127.0.0.1:{production}"
        self.ports = (staging, production)

    def push(self, version_note: str, *, failing: bool = False, branch: str = "main") -> str:
        if branch != "main":
            subprocess.run(["git", "-C", str(self.repo), "checkout", "-q", "-B", branch], check=True)
        files = {"pipelines.yml": pipeline(*self.ports, failing=failing), "NOTE": version_note}
        sha = commit(self.repo, files, version_note)
        subprocess.run(["git", "-C", str(self.repo), "checkout", "-q", "main"], check=True)
        response = self.server.push_github(PROJECT, sha, ref=f"refs/heads/{branch}")
        assert response.status_code == 202, response.text
        build = self.server.wait_build(response.json()["build_id"], timeout=120)
        assert build["status"] == "success", build
        return sha

    def build_id(self, sha: str) -> int:
        builds = self.server.builds_of(PROJECT)["items"]
        return next(b["id"] for b in builds if b["sha"] == sha)

    def environments(self) -> dict[str, Any]:
        response = self.server.http.get(f"/api/v1/projects/{PROJECT}/environments")
        assert response.status_code == 200, response.text
        return {env["name"]: env for env in response.json()}

    def wait_deployed(self, environment: str, sha: str, timeout: float = 90) -> dict[str, Any]:
        """The environment's latest deployment once it ended, which must be of `sha`."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            latest = self.environments().get(environment, {}).get("latest_deployment")
            if latest and latest["sha"] == sha and latest["status"] in ("succeeded", "failed", "rolled_back"):
                return latest
            time.sleep(0.2)
        raise AssertionError(f"{environment} never finished deploying {sha[:8]}: {self.environments()}")

    def wait_status(self, deployment_id: int, status: str, timeout: float = 60) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.server.http.get(f"/api/v1/deployments/{deployment_id}").json()
            if found["status"] == status or found["status"] in ("succeeded", "failed", "rolled_back"):
                return found
            time.sleep(0.1)
        raise AssertionError(f"deployment {deployment_id} never became {status}")

    def promote(self, environment: str, sha: str, token: str | None = None) -> httpx.Response:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return self.server.http.post(
            f"/api/v1/projects/{PROJECT}/environments/{environment}/promote",
            json={"build_id": self.build_id(sha)},
            headers=headers,
        )


def running(prefix: str) -> list[str]:
    names = subprocess.run(
        ["docker", "ps", "--format", "{{.Names}}", "--filter", f"name={prefix}"],
        capture_output=True,
        text=True,
    ).stdout.split()
    return sorted(names)


def answer(url: str) -> str:
    return httpx.get(url, timeout=5).text.strip()


def version(sha: str) -> str:
    return f"hello {sha[:8]}"


@pytest.fixture(scope="module")
def deployer(
    tmp_path_factory: pytest.TempPathFactory, redis_url: str, busybox_image: str, e2e_database: str
) -> Iterator[Deployer]:
    root = tmp_path_factory.mktemp("deploy")
    repo = root / "repo"
    make_repo(repo, {name: (EXAMPLE / name).read_text() for name in ("app.py", "Dockerfile")})
    with deploying_server(root, redis_database(redis_url, 3), workers=3) as server:
        server.add_project(PROJECT, repo)
        yield Deployer(server, repo, free_port(), free_port())


def test_continuous_deployment_then_delivery_with_canary_and_rollback(deployer: Deployer) -> None:
    server = deployer.server
    containers = container_name(str(server.root / "data"), PROJECT, "staging", "")  # ...-staging-<digest>-
    # Continuous deployment: a push reaches staging with no human step.
    v1 = deployer.push("v1")
    staged = deployer.wait_deployed("staging", v1)
    assert staged["status"] == "succeeded", staged
    assert staged["action"] == "auto" and staged["strategy"] == "blue_green"
    assert answer(deployer.staging) == version(v1)
    staging = deployer.environments()["staging"]
    assert staging["release"]["sha"] == v1 and staging["deployed_by"].startswith("auto")
    assert staging["release"]["image_id"].startswith("sha256:")
    names = subprocess.run(
        ["docker", "ps", "--format", "{{.Names}} {{.Ports}}", "--filter", f"name={containers}"],
        capture_output=True,
        text=True,
    ).stdout
    assert f"{containers}blue 127.0.0.1:" in names  # published on loopback only

    # Continuous delivery: production waits for an ops token.
    assert deployer.environments()["production"]["release"] is None
    viewer = server.token_for("viewer")
    refused = deployer.promote("production", v1, token=viewer)
    assert refused.status_code == 403, refused.text
    promoted = deployer.promote("production", v1, token=server.token_for("ops"))
    assert promoted.status_code == 202, promoted.text
    first = deployer.wait_deployed("production", v1)
    assert first["status"] == "succeeded" and first["steps"][-1]["weight"] == 100, first
    assert answer(deployer.production) == version(v1)

    # Blue-green under continuous load: staging moves to v2 and no request fails.
    failures: list[str] = []
    seen: Counter[str] = Counter()
    done = threading.Event()

    def load() -> None:
        with httpx.Client(timeout=5) as client:
            while not done.is_set():
                try:
                    response = client.get(deployer.staging)
                    seen[response.text.strip()] += 1
                    if response.status_code != 200:
                        failures.append(f"{response.status_code} {response.text}")
                except httpx.HTTPError as exc:
                    failures.append(repr(exc))

    client = threading.Thread(target=load)
    client.start()
    try:
        v2 = deployer.push("v2")
        switched = deployer.wait_deployed("staging", v2)
        time.sleep(0.5)
    finally:
        done.set()
        client.join(10)
    assert switched["status"] == "succeeded", switched
    assert failures == [], failures[:5]
    assert seen[version(v1)] > 0 and seen[version(v2)] > 0, seen
    assert answer(deployer.production) == version(v1)  # production stays until promoted

    # Canary: at the 5% step, 3-7% of 1,000 requests reach the new version.
    canary = deployer.promote("production", v2).json()
    at_five = deployer.wait_status(canary["id"], "progressing")
    deadline = time.monotonic() + 30
    while at_five["weight"] != 5 and time.monotonic() < deadline:
        at_five = server.http.get(f"/api/v1/deployments/{canary['id']}").json()
        time.sleep(0.05)
    assert at_five["weight"] == 5, at_five
    with httpx.Client(base_url=deployer.production, timeout=5) as client_:
        answers = Counter(client_.get("/").text.strip() for _ in range(1000))
    assert 30 <= answers[version(v2)] <= 70, answers
    assert answers[version(v1)] + answers[version(v2)] == 1000, answers
    done_canary = deployer.wait_deployed("production", v2)
    assert done_canary["status"] == "succeeded", done_canary
    assert [step["weight"] for step in done_canary["steps"]] == [5, 100]
    assert done_canary["steps"][0]["requests"] >= 30 and done_canary["steps"][0]["errors"] == 0
    assert answer(deployer.production) == version(v2)
    # Staging's previous color (v1, blue) was removed once its keep_previous had passed.
    assert running(containers) == [f"{containers}green"]

    # Promoting a release that has not succeeded in staging (its branch does not go there) is a 409.
    feature = deployer.push("feature work", branch="feature/x")
    early = deployer.promote("production", feature)
    assert early.status_code == 409, early.text
    assert "not yet succeeded in 'staging'" in early.json()["detail"]

    # A canary whose new version answers 500 rolls back by itself within one interval.
    v3 = deployer.push("v3", failing=True)
    assert deployer.wait_deployed("staging", v3)["status"] == "succeeded"  # its health check passes
    bad = deployer.promote("production", v3).json()
    deployer.wait_status(bad["id"], "progressing")
    started = time.monotonic()
    with httpx.Client(base_url=deployer.production, timeout=5) as client_:
        while time.monotonic() - started < INTERVAL * 2:
            client_.get("/")
            found = server.http.get(f"/api/v1/deployments/{bad['id']}").json()
            if found["status"] == "rolled_back":
                break
    assert found["status"] == "rolled_back", found
    assert time.monotonic() - started < INTERVAL + 5
    assert "were 5xx" in found["reason"] and found["weight"] == 0, found
    with httpx.Client(base_url=deployer.production, timeout=5) as client_:
        after = Counter(client_.get("/").text.strip() for _ in range(200))
    assert after == Counter({version(v2): 200})
    assert deployer.environments()["production"]["release"]["sha"] == v2

    # Rollback restores the previous version: staging runs the failing v3, goes back to v2.
    assert httpx.get(deployer.staging).status_code == 500
    back = server.http.post(f"/api/v1/projects/{PROJECT}/environments/staging/rollback")
    assert back.status_code == 202, back.text
    assert back.json()["action"] == "rollback" and back.json()["sha"] == v2
    restored = deployer.wait_deployed("staging", v2)
    assert restored["status"] == "succeeded", restored
    assert answer(deployer.staging) == version(v2)

    actions = [action for _, action, _ in server.audit()]
    assert actions.count("environment.promote") == 3 and actions.count("environment.rollback") == 1


SCRIPT_PIPELINE = """\
image: ciserver-test/busybox:latest
jobs:
  unit: {script: ["true"]}
environments:
  cloud:
    auto: true
    script:
      - 'echo "deploying to $DEPLOY_ENV: $DEPLOY_WEIGHT% at step $DEPLOY_STEP of $CI_COMMIT_SHA"'
      - "LAST"
    strategy: {canary: {steps: [50], interval: 1s}}
"""


def test_a_script_deploy_runs_at_each_step_with_what_to_deploy(deployer: Deployer, tmp_path: Path) -> None:
    server = deployer.server
    repo = tmp_path / "cloud"
    sha = make_repo(repo, {"pipelines.yml": SCRIPT_PIPELINE.replace("LAST", "true")})
    server.add_project("acme/cloud", repo)
    response = server.push_github("acme/cloud", sha)
    assert server.wait_build(response.json()["build_id"])["status"] == "success"
    deployments = "/api/v1/projects/acme/cloud/environments"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        latest = server.http.get(deployments).json()[0]["latest_deployment"]
        if latest and latest["status"] in ("succeeded", "failed"):
            break
        time.sleep(0.2)
    assert latest["status"] == "succeeded", latest
    assert [(s["weight"], s["exit_code"]) for s in latest["steps"]] == [(50, 0), (100, 0)]
    assert f"deploying to cloud: 50% at step 1 of {sha}" in latest["steps"][0]["output"]
    assert f"deploying to cloud: 100% at step 2 of {sha}" in latest["steps"][1]["output"]

    broken = commit(repo, {"pipelines.yml": SCRIPT_PIPELINE.replace("LAST", "exit 3")}, "a failing deploy")
    response = server.push_github("acme/cloud", broken)
    assert server.wait_build(response.json()["build_id"])["status"] == "success"
    while time.monotonic() < deadline + 60:
        latest = server.http.get(deployments).json()[0]["latest_deployment"]
        if latest["sha"] == broken and latest["status"] in ("succeeded", "failed"):
            break
        time.sleep(0.2)
    assert (latest["status"], latest["reason"]) == ("failed", "the deploy script exited 3 at step 1")
    assert len(latest["steps"]) == 1
    assert server.http.get(deployments).json()[0]["release"]["sha"] == sha
