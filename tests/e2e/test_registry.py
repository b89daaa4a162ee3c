"""Release images through a real registry (Debian's docker-registry), as workers on other hosts need
them: an image build pushes its image and records the registry's digest; an engine that lacks the
image (removed here with `docker rmi`, as on another host) pulls it for a job and for a deployment,
and the isolation guard still refuses it to another project; a registry that is down ends the
build's job in `error` naming it, with nothing recorded as built."""

from __future__ import annotations

import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from ciserver.deploy.names import release_tag
from ciserver.ports import free_port
from tests.support.engine import BUSYBOX
from tests.support.git import make_repo
from tests.support.registry import Registry, registry_fixture  # noqa: F401  (the `registry` fixture)
from tests.support.server import CiServer, deploying_server
from tests.support.services import redis_database

# One database is enough here: images travel through the registry and the engine, the same whatever the
# database.
ONE_DATABASE = True

pytestmark = pytest.mark.timeout(300)

DOCKERFILE = f'FROM {BUSYBOX}\nCOPY www /www\nCMD ["busybox", "httpd", "-f", "-p", "8000", "-h", "/www"]\n'


def pipeline(listen: int) -> str:
    return f"""\
stages: [build, test]
jobs:
  package:
    stage: build
    image_build: {{context: app}}
  smoke:
    stage: test
    when: manual
    image: ${{CI_RELEASE_IMAGE}}
    script: [cat /www/version.txt, 'echo "release=$CI_RELEASE_IMAGE"']
environments:
  staging: {{auto: false, listen: "127.0.0.1:{listen}", strategy: recreate}}
service: {{port: 8000, health: /healthz, health_timeout: 20s}}
"""


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory,
    redis_url: str,
    busybox_image: str,
    registry: Registry,
    e2e_database: str,
) -> Iterator[CiServer]:
    """A ciserver whose release images go to `registry`, deploying through a private nginx."""
    root = tmp_path_factory.mktemp("registry-ci")
    database = redis_database(redis_url, 10)
    with deploying_server(root, database, 2, CISERVER_REGISTRY=registry.address) as ci:
        yield ci


def project(server: CiServer, root: Path, listen: int, note: str) -> tuple[str, str]:
    name = f"acme{uuid.uuid4().hex[:8]}/shop"
    files = {
        "pipelines.yml": pipeline(listen),
        "app/Dockerfile": DOCKERFILE,
        "app/www/version.txt": f"shop {note}\n",
        "app/www/healthz": "ok\n",
    }
    sha = make_repo(root, files)
    server.add_project(name, root)
    return name, sha


def built(server: CiServer, name: str, sha: str) -> dict[str, Any]:
    response = server.push_github(name, sha)
    assert response.status_code == 202, response.text
    return server.wait_build(response.json()["build_id"], timeout=120)


def jobs_of(build: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {job["name"]: job for job in build["jobs"]}


def remove_image(reference: str) -> None:
    """Off this engine, as it is on a host that never built it (the layers underneath may stay)."""
    subprocess.run(["docker", "rmi", "-f", reference], capture_output=True)
    assert not on_engine(reference)


def on_engine(reference: str) -> bool:
    return subprocess.run(["docker", "image", "inspect", reference], capture_output=True).returncode == 0


def wait_deployed(server: CiServer, name: str, environment: str, timeout: float = 90) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = server.http.get(f"/api/v1/projects/{name}/environments").json()
        latest = next((e for e in found if e["name"] == environment), {}).get("latest_deployment")
        if latest and latest["status"] in ("succeeded", "failed", "rolled_back"):
            return latest
        time.sleep(0.2)
    raise AssertionError(f"{name} {environment} never finished deploying")


def test_a_release_image_is_pushed_and_an_engine_without_it_pulls_it_for_jobs_and_deployments(
    server: CiServer, registry: Registry, tmp_path: Path
) -> None:
    listen = free_port()
    name, sha = project(server, tmp_path / "repo", listen, "1.0")
    tag = release_tag(name, sha, registry.address)
    repository = tag.rpartition(":")[0].split("/", 1)[1]  # the registry's name: no HOST:PORT
    try:
        build = built(server, name, sha)
        assert build["status"] == "success", build
        package = jobs_of(build)["package"]
        assert package["image_tag"] == tag
        assert registry.tags(repository) == [sha]
        assert (
            package["image_digest"] == f"{registry.address}/{repository}@{registry.digest(repository, sha)}"
        )
        log = server.log(package["id"])
        assert f"Pushed {tag}: " in log and f"digest {registry.digest(repository, sha)}" in log
        assert log.count("Pushed") == 1  # a summary, not the engine's progress lines
        (release,) = server.http.get(f"/api/v1/projects/{name}/releases").json()
        assert release["image_digest"] == package["image_digest"]

        # A later job on an engine without the image pulls it from the registry.
        remove_image(package["image_id"])
        smoke = jobs_of(build)["smoke"]
        played = server.http.post(f"/api/v1/jobs/{smoke['id']}/play")
        assert played.status_code == 202, played.text
        smoke = server.wait_job_status(build["id"], "smoke", "success", timeout=60)
        smoke_log = server.log(smoke["id"])
        assert "shop 1.0" in smoke_log and f"release={tag}" in smoke_log

        # Pulled, the image still carries its project: another project's job is refused it.
        remove_image(package["image_id"])
        other_repo = tmp_path / "other"
        other = f"other{uuid.uuid4().hex[:8]}/tool"
        other_sha = make_repo(
            other_repo,
            {"pipelines.yml": f"jobs:\n  steal:\n    image: {tag}\n    script: [cat /www/version.txt]\n"},
        )
        server.add_project(other, other_repo)
        stolen = jobs_of(built(server, other, other_sha))["steal"]
        assert stolen["status"] == "error" and f"was built by project {name}" in stolen["error"], stolen

        # The deploy worker's engine lacks it too: the deployment pulls it by its digest and serves it.
        remove_image(package["image_id"])
        promoted = server.http.post(
            f"/api/v1/projects/{name}/environments/staging/promote", json={"build_id": build["id"]}
        )
        assert promoted.status_code in (200, 201, 202), promoted.text
        deployment = wait_deployed(server, name, "staging")
        assert deployment["status"] == "succeeded", server.http.get(
            f"/api/v1/deployments/{deployment['id']}"
        ).text
        assert httpx.get(f"http://127.0.0.1:{listen}/version.txt", timeout=5).text == "shop 1.0\n"
        assert on_engine(package["image_digest"])
    finally:
        subprocess.run(["docker", "rmi", "-f", tag], capture_output=True)


def test_a_registry_that_is_down_ends_the_image_build_in_error_naming_it(
    server: CiServer, registry: Registry, tmp_path: Path
) -> None:
    name, sha = project(server, tmp_path / "repo", free_port(), "2.0")
    tag = release_tag(name, sha, registry.address)
    registry.stop()
    try:
        build = built(server, name, sha)
    finally:
        registry.start()
    try:
        package = jobs_of(build)["package"]
        assert build["status"] in ("error", "failed") and package["status"] == "error", build
        assert f"could not push {tag} to the registry {registry.address}: " in package["error"], package
        assert "connection refused" in package["error"].lower(), package["error"]
        # Nothing half-recorded: no image on the job, no release, nothing in the registry.
        assert (package["image_tag"], package["image_id"], package["image_digest"]) == (None, None, None)
        assert server.http.get(f"/api/v1/projects/{name}/releases").json() == []
        assert registry.tags(tag.rpartition(":")[0].split("/", 1)[1]) == []
        assert jobs_of(build)["smoke"]["status"] == "skipped"
    finally:
        subprocess.run(["docker", "rmi", "-f", tag], capture_output=True)
