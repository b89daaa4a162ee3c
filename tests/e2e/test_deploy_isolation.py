"""Deployments of one project against another's, as pushers would try it, through real pushes to a
real server with real Docker and a real nginx: a `listen` nginx cannot bind fails that deployment
alone; look-alike project and environment names never share a container, an nginx file or a log;
jobs cannot open a connection to a deployed container, which nginx still serves."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from ciserver.ports import free_port
from tests.support.git import commit, make_repo
from tests.support.server import CiServer, deploying_server
from tests.support.services import redis_database
from workers.executors.docker_service import container_name

# One database is enough here: deployed containers' isolation is the engine's and nginx's, the same whatever
# the database.
ONE_DATABASE = True

# The released service: busybox's httpd answering "<project> <short sha>" at / and ok at /healthz.
DOCKERFILE = """\
FROM ciserver-test/busybox:latest
ARG VERSION=dev
RUN mkdir -p /www && echo "$VERSION" > /www/index.html && echo ok > /www/healthz
CMD ["httpd", "-f", "-p", "8000", "-h", "/www"]
"""


def service_pipeline(project: str, environments: dict[str, int]) -> str:
    declared = "".join(
        f"  {name}: {{auto: true, listen: '127.0.0.1:{port}'}}\n" for name, port in environments.items()
    )
    return f"""\
stages: [build]
jobs:
  package:
    stage: build
    image_build: {{context: ., build_args: {{VERSION: "{project} ${{CI_COMMIT_SHORT_SHA}}"}}}}
environments:
{declared}service: {{port: 8000, health: /healthz, health_timeout: 30s}}
"""


class Server:
    """A ciserver with its nginx, and the repositories of the projects a test adds."""

    def __init__(self, server: CiServer, root: Path) -> None:
        self.server, self.root = server, root
        self.data = root / "data"
        self.repos: dict[str, Path] = {}

    def push(self, project: str, files: dict[str, str]) -> str:
        """Commit `files` to the project's repository (made and registered on first use), push, and
        wait for the build to succeed; returns the commit."""
        repo = self.repos.get(project)
        if repo is None:
            repo = self.repos[project] = self.root / "repos" / project
            sha = make_repo(repo, files)
            self.server.add_project(project, repo)
        else:
            sha = commit(repo, files, "next")
        response = self.server.push_github(project, sha)
        assert response.status_code == 202, response.text
        build = self.server.wait_build(response.json()["build_id"], timeout=120)
        assert build["status"] == "success", build
        return sha

    def push_service(self, project: str, environments: dict[str, int]) -> str:
        files = {"Dockerfile": DOCKERFILE, "pipelines.yml": service_pipeline(project, environments)}
        return self.push(project, files)

    def deployed(self, project: str, environment: str, sha: str, timeout: float = 90) -> dict[str, Any]:
        """The environment's deployment of `sha`, once it has ended."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            response = self.server.http.get(f"/api/v1/projects/{project}/environments")
            assert response.status_code == 200, response.text
            found = {env["name"]: env for env in response.json()}
            latest = found.get(environment, {}).get("latest_deployment")
            if latest and latest["sha"] == sha and latest["status"] in ("succeeded", "failed", "rolled_back"):
                return latest
            time.sleep(0.2)
        raise AssertionError(f"{project} {environment} never finished deploying {sha[:8]}")

    def containers(self) -> dict[str, dict[str, str]]:
        """This server's deployed containers: name -> labels."""
        ids = docker("ps", "-aq", "--filter", f"label=ciserver.deploy={self.data}").split()
        inspected = json.loads(docker("inspect", *ids)) if ids else []
        return {c["Name"].lstrip("/"): c["Config"]["Labels"] for c in inspected}

    def left_of(self, project: str, environment: str) -> list[str]:
        """Containers and networks the environment still has on the engine."""
        labels = {"deploy": str(self.data), "project": project, "environment": environment}
        filters = [
            arg for key, value in labels.items() for arg in ("--filter", f"label=ciserver.{key}={value}")
        ]
        return (docker("ps", "-aq", *filters) + docker("network", "ls", "-q", *filters)).split()


def docker(*args: str) -> str:
    return subprocess.run(["docker", *args], check=True, capture_output=True, text=True).stdout


def answer(listen: int) -> str:
    return httpx.get(f"http://127.0.0.1:{listen}/", timeout=5).text.strip()


def expected(project: str, sha: str) -> str:
    return f"{project} {sha[:8]}"


@pytest.fixture(scope="module")
def ci(
    tmp_path_factory: pytest.TempPathFactory, redis_url: str, busybox_image: str, e2e_database: str
) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("isolation")
    with deploying_server(root, redis_database(redis_url, 12), workers=2) as server:
        yield Server(server, root)


def test_a_listen_nginx_cannot_bind_fails_that_deployment_and_nothing_else(ci: Server) -> None:
    # Another process holds production's address; staging's is free.
    held = socket.socket()
    held.bind(("127.0.0.1", 0))
    held.listen()
    busy, staging = held.getsockname()[1], free_port()
    try:
        v1 = ci.push_service("acme/busy", {"staging": staging, "production": busy})
        failed = ci.deployed("acme/busy", "production", v1)
        assert failed["status"] == "failed", failed
        assert f"bind() to 127.0.0.1:{busy} failed (98: Address already in use)" in failed["reason"]
        assert ci.deployed("acme/busy", "staging", v1)["status"] == "succeeded"
        assert ci.left_of("acme/busy", "production") == []  # its container and network are gone
        # Its file is gone: nginx does not keep failing every later reload on it.
        served = "".join(path.read_text() for path in (ci.data / "nginx" / "environments").glob("*.conf"))
        assert f":{busy};" not in served

        # Another project's deployments still reach nginx: each new release is served at once.
        other = free_port()
        for _ in range(2):
            sha = ci.push_service("acme/other", {"web": other})
            assert ci.deployed("acme/other", "web", sha)["status"] == "succeeded"
            assert answer(other) == expected("acme/other", sha)
        # The first project's release still answers where it did.
        assert answer(staging) == expected("acme/busy", v1)
    finally:
        held.close()


def test_look_alike_projects_and_environments_share_no_container_file_or_log(ci: Server) -> None:
    shop, shop_prod = free_port(), free_port()
    first = ci.push_service("acme/shop", {"prod-eu": shop})
    assert ci.deployed("acme/shop", "prod-eu", first)["status"] == "succeeded"
    second = ci.push_service("acme-shop/prod", {"eu": shop_prod})
    assert ci.deployed("acme-shop/prod", "eu", second)["status"] == "succeeded"

    # Side by side: each answers at its own address, from its own container.
    assert answer(shop) == expected("acme/shop", first)
    assert answer(shop_prod) == expected("acme-shop/prod", second)
    owners = {
        (labels["ciserver.project"], labels["ciserver.environment"])
        for labels in ci.containers().values()
        if labels["ciserver.project"] in ("acme/shop", "acme-shop/prod")
    }
    assert owners == {("acme/shop", "prod-eu"), ("acme-shop/prod", "eu")}
    # Each has an nginx file of its own, and a log that holds only its own requests.
    nginx = ci.data / "nginx"
    files = {path.name: path.read_text() for path in (nginx / "environments").glob("acme-shop-prod-eu*")}
    assert len(files) == 2, files
    for port in (shop, shop_prod):
        (text,) = [text for text in files.values() if f"listen 127.0.0.1:{port};" in text]
        log = Path(re.search(r"access_log (\S+) ", text)[1])  # type: ignore[index]
        deadline = time.monotonic() + 5
        while not log.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        upstreams = {line.split()[1] for line in log.read_text().splitlines()}
        own = re.findall(r"server (\S+) weight", text)
        assert upstreams and upstreams <= set(own), (port, upstreams, own)


def test_a_container_of_another_project_that_carries_the_name_is_not_removed(ci: Server) -> None:
    # The name the deployment of acme/owned's "prod" would take, held by acme/other's container.
    name = container_name(str(ci.data), "acme/owned", "prod", "blue")
    labels = {"ciserver.deploy": str(ci.data), "ciserver.project": "acme/other",
              "ciserver.environment": "prod", "ciserver.color": "blue"}  # fmt: skip
    flags = [arg for key, value in labels.items() for arg in ("--label", f"{key}={value}")]
    theirs = docker(
        "run", "-d", "--name", name, *flags, "ciserver-test/busybox:latest", "sleep", "600"
    ).strip()
    try:
        sha = ci.push_service("acme/owned", {"prod": free_port()})
        failed = ci.deployed("acme/owned", "prod", sha)
        assert failed["status"] == "failed", failed
        assert name in failed["reason"] and "acme/other" in failed["reason"], failed["reason"]
        assert docker("inspect", "-f", "{{.State.Running}}", theirs).strip() == "true"
        assert ci.left_of("acme/owned", "prod") == []  # the network it made on the way is gone
    finally:
        subprocess.run(["docker", "rm", "-f", theirs], capture_output=True)


PROBE = """\
image: ciserver-test/busybox:latest
jobs:
  default-network:
    script:
      - (mkdir -p /tmp/www && echo own > /tmp/www/index.html && httpd -f -p 8000 -h /tmp/www) &
      - PROBE
  with-services:
    services:
      - image: ciserver-test/busybox:latest
        alias: side
        command: [sh, -c, "mkdir -p /www && echo own > /www/index.html && exec httpd -f -p 8000 -h /www"]
    script:
      - PROBE
"""
# An HTTP request by hand (busybox's wget crashes in the test image; nc's exit code says nothing).
PROBE_SCRIPT = (
    "sleep 1; for target in OWN TARGETS; do "
    'if printf "GET / HTTP/1.0\\r\\n\\r\\n" | nc -w 3 "$target" 8000 | grep -q "200 OK"; '
    'then echo "REACHED $target"; else echo "BLOCKED $target"; fi; done'
)


def test_jobs_cannot_connect_to_a_deployed_container_that_nginx_serves(ci: Server) -> None:
    listen = free_port()
    sha = ci.push_service("acme/prod-service", {"live": listen})
    assert ci.deployed("acme/prod-service", "live", sha)["status"] == "succeeded"
    (container,) = [
        n for n, labels in ci.containers().items() if labels["ciserver.project"] == "acme/prod-service"
    ]
    networks = json.loads(docker("inspect", "-f", "{{json .NetworkSettings.Networks}}", container))
    addresses = [network["IPAddress"] for network in networks.values() if network["IPAddress"]]
    assert addresses, networks

    # Another pusher's jobs, one on the default network and one with a service, each try every address.
    job_network = {"default-network": "127.0.0.1", "with-services": "side"}
    script = PROBE_SCRIPT.replace("TARGETS", " ".join(addresses))
    pipeline = PROBE
    for own in job_network.values():  # in the order the jobs are written
        pipeline = pipeline.replace("- PROBE", "- " + json.dumps(script.replace("OWN", own)), 1)
    probe = ci.push("acme/probe", {"pipelines.yml": pipeline})
    builds = ci.server.builds_of("acme/probe")["items"]
    build = ci.server.build(next(b["id"] for b in builds if b["sha"] == probe))
    for job in build["jobs"]:
        log = ci.server.log(job["id"])
        assert f"REACHED {job_network[job['name']]}" in log, log  # the probe itself works
        for address in addresses:
            assert f"BLOCKED {address}" in log, log
    assert answer(listen) == expected("acme/prod-service", sha)
