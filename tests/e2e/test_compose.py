"""The production shape, for real: the top-level docker-compose.yml brought up by docker-compose with an
.env alone (tests/support/compose.py; locally built stand-ins for the public images), then one team's
day. The first admin token from .env opens the API; a project registered over it builds a signed
GitHub push green, its log read back through the API; scaled to three workers, one is killed with
`docker kill` while it runs a job, and the job's retry policy finishes the build green; a release is
promoted to an environment and answers through the deployer's nginx; after `docker-compose down` and
`up -d` every build, log, artifact and the deployment are still there and the environment still
answers. Release images go through the stack's registry (CISERVER_REGISTRY); logs and artifacts
live in the database (CISERVER_BLOB_STORE=database)."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from ciserver.ports import free_port
from tests.support.compose import ComposeStack, build_images
from tests.support.engine import BUSYBOX
from tests.support.git import commit, make_repo
from tests.support.payloads import WEBHOOK_SECRET, github_headers, github_push_body

pytestmark = pytest.mark.timeout(900)  # a cold first run builds the stand-in images (2-3 minutes)

PROJECT = "acme/shop"
TTL = 3  # CISERVER_WORKER_TTL: a killed worker is found within seconds
DOCKERFILE = f'FROM {BUSYBOX}\nCOPY www /www\nCMD ["busybox", "httpd", "-f", "-p", "8000", "-h", "/www"]\n'


def pipeline(listen: int, *, slow: bool) -> str:
    """hello keeps an artifact; slow (second push) sleeps through its first attempt only."""
    slow_job = """\
  slow:
    stage: test
    retry: {max: 1, when: [runner_failure]}
    script:
      - echo attempt $CI_JOB_ATTEMPT
      - if [ "$CI_JOB_ATTEMPT" = 1 ]; then sleep 60; fi
"""
    return f"""\
image: {BUSYBOX}
stages: [test, build]
jobs:
  hello:
    stage: test
    script: [echo hello from compose, mkdir -p out, echo kept > out/note.txt]
    artifacts: {{paths: [out/]}}
{slow_job if slow else ""}  package:
    stage: build
    image_build: {{context: app}}
environments:
  production: {{auto: false, listen: "127.0.0.1:{listen}", strategy: recreate}}
service: {{port: 8000, health: /healthz, health_timeout: 30s}}
"""


def files(listen: int, version: str, *, slow: bool) -> dict[str, str]:
    return {
        "pipelines.yml": pipeline(listen, slow=slow),
        "app/Dockerfile": DOCKERFILE,
        "app/www/version.txt": f"shop {version}\n",
        "app/www/healthz": "ok\n",
    }


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, busybox_image: str) -> Iterator[ComposeStack]:
    build_images()
    compose = ComposeStack(
        tmp_path_factory.mktemp("compose"),
        CISERVER_BLOB_STORE="database",
        CISERVER_ALLOW_LOCAL_REPOS="true",
        CISERVER_WORKER_TTL=str(TTL),
        CISERVER_STOP_GRACE="2",
    )
    try:
        compose.up()
        yield compose
    finally:
        compose.destroy()


def push(stack: ComposeStack, webhook: str, sha: str) -> int:
    body = github_push_body(PROJECT, sha)
    response = stack.http.post(webhook, content=body, headers=github_headers(body, WEBHOOK_SECRET))
    assert response.status_code == 202, response.text
    return response.json()["build_id"]


def wait_build(stack: ComposeStack, build_id: int, timeout: float = 120) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        build = stack.http.get(f"/api/v1/builds/{build_id}").json()
        if build["status"] in ("success", "failed", "error", "canceled", "skipped"):
            return build
        assert time.monotonic() < deadline, f"build {build_id} never ended: {build}\n{stack.logs()}"
        time.sleep(0.3)


def outcome(build: dict[str, Any]) -> list[tuple[str, str, int, str | None]]:
    """What a failed assertion on a build shows: each job's status, attempt and error."""
    return [(j["name"], j["status"], j["attempt"], j["error"]) for j in build["jobs"]]


def jobs(build: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {job["name"]: job for job in build["jobs"]}


def log(stack: ComposeStack, job_id: int) -> str:
    response = stack.http.get(f"/api/v1/jobs/{job_id}/log")
    assert response.status_code == 200, response.text
    return response.text


def job_container(job_id: int, timeout: float = 60) -> dict[str, str]:
    """The labels of the running container of job `job_id`, once there is one."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = subprocess.run(
            ["docker", "ps", "-q", "--filter", f"label=ciserver.job={job_id}"], capture_output=True, text=True
        ).stdout.split()
        if found:
            inspect = subprocess.run(["docker", "inspect", found[0]], capture_output=True, text=True)
            return json.loads(inspect.stdout)[0]["Config"]["Labels"]
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} never ran in a container")


def wait_deployment(stack: ComposeStack, deployment_id: int, timeout: float = 90) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        found = stack.http.get(f"/api/v1/deployments/{deployment_id}").json()
        if found["status"] in ("succeeded", "failed", "rolled_back"):
            return found
        assert time.monotonic() < deadline, f"deployment never ended: {found}\n{stack.logs()}"
        time.sleep(0.3)


def answers(url: str, timeout: float = 60) -> str:
    """What `url` answers once it does (the deployer's nginx may be starting)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            response = httpx.get(url, timeout=3)
            if response.status_code == 200:
                return response.text.strip()
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, f"{url} never answered"
        time.sleep(0.3)


def test_a_teams_stack_builds_survives_a_killed_worker_deploys_and_keeps_everything_across_down_and_up(
    stack: ComposeStack,
) -> None:
    listen = free_port()
    http = stack.http

    # The first admin token came from .env: it can register a project.
    repo = stack.repos / "shop"
    first = make_repo(repo, files(listen, "1", slow=False))
    registered = http.post(
        "/api/v1/projects",
        json={"name": PROJECT, "repo": str(repo), "forge": "github", "secret": WEBHOOK_SECRET},
    )
    assert registered.status_code == 201, registered.text
    webhook = registered.json()["webhook_path"]

    # A signed push builds green; its log is served from the database.
    build_one = wait_build(stack, push(stack, webhook, first))
    assert build_one["status"] == "success", (outcome(build_one), build_one["error"], stack.logs())
    stack.images.append(jobs(build_one)["package"]["image_id"])
    hello = jobs(build_one)["hello"]
    assert "hello from compose" in log(stack, hello["id"])
    (artifact,) = http.get(f"/api/v1/builds/{build_one['id']}/artifacts").json()
    assert http.get(artifact["download"]).text == "kept\n"

    # Three workers; the one running `slow` is killed outright, and the build still ends green.
    stack.up("--scale", "worker=3")
    workers = stack.containers("worker")
    assert len(workers) == 3
    second = commit(repo, files(listen, "2", slow=True), "a slow job")
    build_two_id = push(stack, webhook, second)
    slow = jobs(wait_build_running_job(stack, build_two_id, "slow"))["slow"]
    worker_name = job_container(slow["id"])["ciserver.worker"]
    wait_log(stack, slow["id"], "attempt 1")  # what the first attempt said must not be lost
    victim = next(w for w in workers if w[:12] in worker_name)  # named by its container
    subprocess.run(["docker", "kill", victim], check=True, capture_output=True)
    build_two = wait_build(stack, build_two_id)
    assert build_two["status"] == "success", (outcome(build_two), build_two["error"], stack.logs())
    slow = jobs(build_two)["slow"]
    assert slow["attempt"] == 2
    slow_log = log(stack, slow["id"])
    assert "attempt 1" in slow_log and "attempt 2" in slow_log and "was lost" in slow_log
    package = jobs(build_two)["package"]
    stack.images.append(package["image_id"])

    # Promoted by hand, the release answers through the deployer's nginx.
    promoted = http.post(
        f"/api/v1/projects/{PROJECT}/environments/production/promote", json={"build_id": build_two_id}
    )
    assert promoted.status_code in (200, 201, 202), promoted.text
    deployment = wait_deployment(stack, promoted.json()["id"])
    assert deployment["status"] == "succeeded", (deployment, stack.logs())
    environment = f"http://127.0.0.1:{listen}/version.txt"
    assert answers(environment) == "shop 2"

    # down (volumes kept) and up: everything is still there, and the environment still answers.
    stack.compose("down", "-t", "15")
    stack.up()
    for before in (build_one, build_two):
        after = http.get(f"/api/v1/builds/{before['id']}").json()
        assert after["status"] == "success"
        assert [(j["name"], j["status"]) for j in after["jobs"]] == [
            (j["name"], j["status"]) for j in before["jobs"]
        ]
    assert "hello from compose" in log(stack, hello["id"])
    assert "attempt 2" in log(stack, slow["id"])
    assert http.get(artifact["download"]).text == "kept\n"
    kept = http.get(f"/api/v1/deployments/{deployment['id']}").json()
    assert (kept["status"], kept["sha"]) == ("succeeded", second)
    assert answers(environment) == "shop 2"

    # The release image went through the stack's registry, and is still in its volume.
    assert package["image_tag"].startswith(f"{stack.registry}/"), package
    catalog = httpx.get(f"http://{stack.registry}/v2/_catalog", timeout=5).json()
    repository = package["image_tag"].rpartition(":")[0].split("/", 1)[1]
    assert repository in catalog["repositories"], catalog
    assert package["image_digest"].startswith(f"{stack.registry}/{repository}@sha256:"), package
    assert package["image_digest"] in repo_digests(deployed_image(stack))  # the deployed is that image


def wait_build_running_job(stack: ComposeStack, build_id: int, name: str) -> dict[str, Any]:
    deadline = time.monotonic() + 60
    while True:
        build = stack.http.get(f"/api/v1/builds/{build_id}").json()
        if jobs(build).get(name, {}).get("status") == "running":
            return build
        assert time.monotonic() < deadline, f"{name} never ran: {build}\n{stack.logs()}"
        time.sleep(0.2)


def wait_log(stack: ComposeStack, job_id: int, text: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while text not in log(stack, job_id):
        assert time.monotonic() < deadline, f"job {job_id}'s log never said {text!r}"
        time.sleep(0.2)


def repo_digests(image: str) -> list[str]:
    inspect = subprocess.run(["docker", "image", "inspect", image], capture_output=True, text=True)
    return json.loads(inspect.stdout)[0]["RepoDigests"]


def deployed_image(stack: ComposeStack) -> str:
    """The image (id) the deployed service's container runs."""
    found = subprocess.run(
        ["docker", "ps", "-q", "--filter", f"label=ciserver.deploy={stack.data_dir}"],
        capture_output=True,
        text=True,
    ).stdout.split()
    assert len(found) == 1, found
    inspect = subprocess.run(["docker", "inspect", found[0]], capture_output=True, text=True)
    return json.loads(inspect.stdout)[0]["Config"]["Image"]
