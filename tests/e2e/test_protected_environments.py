"""Protected environments end to end, attacked as a pusher would: real pushes of real repositories
to a real server, real image builds, containers and nginx. Which refs may deploy where, whether a
promote is needed and who may give it are the server's; a pushed file may only ask within them."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from ciserver.ports import free_port
from tests.support.git import commit, git, make_repo
from tests.support.server import CiServer, deploying_server
from tests.support.services import redis_database

# A tiny service: busybox httpd answering its commit at /, `ok` at /healthz, and at /secret the
# DB_URL it was given (so a test can see which secret reached the deployment).
SERVE = (
    "mkdir -p /tmp/w && echo ok > /tmp/w/healthz && echo $CI_COMMIT_SHA > /tmp/w/index.html"
    ' && echo "${DB_URL:-none}" > /tmp/w/secret && exec httpd -f -p 8000 -h /tmp/w'
)
SERVICE = f"service: {{port: 8000, health: /healthz, health_timeout: 20s, command: [sh, -c, '{SERVE}']}}\n"
BUILD = """\
image: ciserver-test/busybox:latest
jobs:
  package: {image_build: {context: .}}
"""
DOCKERFILE = "FROM ciserver-test/busybox:latest\n"
QUICK = "strategy: {blue_green: {keep_previous: 1s}}"
PRODUCTION_VALUE = "postgres://production-only-5678"
SHARED_VALUE = "postgres://shared-fallback-1234"


def pipeline(environments: dict[str, str], jobs: str = "") -> str:
    """The image build (plus `jobs`), the service, and each environment's keys as inline YAML."""
    declared = "".join(f"  {name}: {{{keys}}}\n" for name, keys in environments.items())
    return BUILD + jobs + "environments:\n" + declared + SERVICE


class Server:
    """One ciserver with nginx, and helpers to push a branch of a project with a given pipeline."""

    def __init__(self, server: CiServer, root: Path) -> None:
        self.server, self.root, self.http = server, root, server.http

    def project(self, name: str) -> Path:
        repo = self.root / name.replace("/", "-")
        make_repo(repo, {"Dockerfile": DOCKERFILE, "pipelines.yml": BUILD})
        self.server.add_project(name, repo)
        return repo

    def push(self, project: str, repo: Path, pipeline: str, branch: str = "main") -> dict[str, Any]:
        """Commit `pipeline` on `branch`, push it, and return the build once it ended."""
        git(repo, "checkout", "-q", "-B", branch)
        sha = commit(repo, {"pipelines.yml": pipeline, "NOTE": f"{branch} {time.time()}"}, f"on {branch}")
        git(repo, "checkout", "-q", "main")
        response = self.server.push_github(project, sha, ref=f"refs/heads/{branch}")
        assert response.status_code == 202, response.text
        return self.server.wait_build(response.json()["build_id"], timeout=120)

    def environments(self, project: str) -> dict[str, Any]:
        response = self.http.get(f"/api/v1/projects/{project}/environments")
        assert response.status_code == 200, response.text
        return {env["name"]: env for env in response.json()}

    def release_of(self, project: str, build: dict[str, Any]) -> dict[str, Any]:
        releases = self.http.get(f"/api/v1/projects/{project}/releases").json()
        return next(r for r in releases if r["build_id"] == build["id"])

    def deployments(self, project: str, environment: str) -> list[dict[str, Any]]:
        params = {"project": project, "environment": environment}
        return self.http.get("/api/v1/deployments", params=params).json()

    def wait_deployed(self, project: str, environment: str, sha: str, timeout: float = 90) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            latest = self.environments(project).get(environment, {}).get("latest_deployment")
            if latest and latest["sha"] == sha and latest["status"] in ("succeeded", "failed", "rolled_back"):
                assert latest["status"] == "succeeded", latest
                return latest
            time.sleep(0.2)
        raise AssertionError(f"{environment} never deployed {sha[:8]}: {self.environments(project)}")

    def secret_set(self, project: str, key: str, value: str, *options: str) -> None:
        """`ciserver secret set`, the value on stdin as a person pipes it."""
        argv = [sys.executable, "-m", "ciserver", "secret", "set", project, key, *options]
        result = subprocess.run(argv, env=self.server.env, input=value, capture_output=True, text=True)
        assert result.returncode == 0, result.stderr

    def token(self, role: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.server.token_for(role)}"}

    def audit(self) -> list[tuple[str, str, str]]:
        return self.server.audit()


def listening(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(1)
        return probe.connect_ex(("127.0.0.1", port)) == 0


def served(port: int, path: str = "/") -> str:
    return httpx.get(f"http://127.0.0.1:{port}{path}", timeout=5).text.strip()


@pytest.fixture(scope="module")
def ci(
    tmp_path_factory: pytest.TempPathFactory, redis_url: str, busybox_image: str, e2e_database: str
) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("protected")
    with deploying_server(root, redis_database(redis_url, 5), workers=2) as server:
        yield Server(server, root)


def test_a_feature_branch_can_neither_take_production_nor_create_an_environment(ci: Server) -> None:
    project, production, other, qa = "acme/shop", free_port(), free_port(), free_port()
    repo = ci.project(project)
    main = {"production": f"auto: true, listen: 127.0.0.1:{production}"}
    v1 = ci.push(project, repo, pipeline(main))
    assert v1["status"] == "success", v1
    ci.wait_deployed(project, "production", v1["sha"])
    assert served(production) == v1["sha"]

    # The feature branch's own file says production takes every branch, at once, somewhere else,
    # with another strategy; and declares a new environment.
    hijack = {
        "production": f"auto: true, branches: ['**'], listen: 127.0.0.1:{other}, strategy: recreate",
        "qa": f"auto: true, branches: ['**'], listen: 127.0.0.1:{qa}",
    }
    feature = ci.push(project, repo, pipeline(hijack), branch="feature/hijack")
    assert feature["status"] == "success", feature
    release = ci.release_of(project, feature)
    assert release["environments"] == []
    assert "takes the default branch 'main' (its rules on the server)" in release["refused"]["production"]
    assert "'qa' is not declared on the server" in release["refused"]["qa"], release["refused"]
    # Deployments are recorded in the transaction that makes the build green: none now is none ever.
    assert [d for d in ci.deployments(project, "production") if d["sha"] == feature["sha"]] == []
    environments = ci.environments(project)
    assert "qa" not in environments
    kept = environments["production"]
    assert kept["release"]["sha"] == v1["sha"]
    assert (kept["listen"], kept["strategy"]) == (f"127.0.0.1:{production}", "blue_green")
    assert served(production) == v1["sha"]
    assert not listening(other) and not listening(qa)

    # The default branch declares qa: it is created, with its rules from that file.
    declared = ci.push(project, repo, pipeline({**main, "qa": f"auto: true, listen: 127.0.0.1:{qa}"}))
    assert declared["status"] == "success", declared
    ci.wait_deployed(project, "qa", declared["sha"])
    qa_row = ci.environments(project)["qa"]
    assert qa_row["listen"] == f"127.0.0.1:{qa}"
    assert (qa_row["protection"]["branches"], qa_row["protection"]["tags"]) == (None, None)
    assert served(qa) == declared["sha"]


def test_ops_protect_staging_for_release_branches_and_developers_cannot(ci: Server) -> None:
    project, staging = "acme/api", free_port()
    repo = ci.project(project)
    refs = "branches: [main, 'release/*', 'feature/*']"
    file = pipeline({"staging": f"auto: true, {refs}, listen: 127.0.0.1:{staging}, {QUICK}"})
    first = ci.push(project, repo, file)
    ci.wait_deployed(project, "staging", first["sha"])
    assert ci.environments(project)["staging"]["protection"]["branches"] == ["main", "release/*", "feature/*"]

    url = f"/api/v1/projects/{project}/environments/staging/protection"
    rules = {"branches": ["main", "release/*"]}
    denied = ci.http.put(url, json=rules, headers=ci.token("developer"))
    assert denied.status_code == 403 and "ops role" in denied.json()["detail"]
    bad = ci.http.put(url, json={"promote_role": "root"}, headers=ci.token("ops"))
    assert bad.status_code == 422 and "promote_role" in bad.json()["detail"]
    protected = ci.http.put(url, json=rules, headers=ci.token("ops"))
    assert protected.status_code == 200, protected.text
    assert ci.http.get(url).json()["branches"] == ["main", "release/*"]
    assert any(
        actor.startswith("token:")
        and (action, target) == ("environment.protect", f"project:{project}/environment:staging")
        for actor, action, target in ci.audit()
    )

    release = ci.push(project, repo, file, branch="release/1")
    assert release["status"] == "success", release
    ci.wait_deployed(project, "staging", release["sha"])
    assert served(staging) == release["sha"]  # at the server's listen

    feature = ci.push(project, repo, file, branch="feature/x")
    assert feature["status"] == "success", feature
    refused = ci.release_of(project, feature)["refused"]
    assert "takes branches [main, release/*] (its rules on the server)" in refused["staging"], refused
    assert [d for d in ci.deployments(project, "staging") if d["sha"] == feature["sha"]] == []
    assert served(staging) == release["sha"]


def test_require_promote_stops_auto_and_only_the_promote_role_may_promote(ci: Server) -> None:
    project, production = "acme/pay", free_port()
    repo = ci.project(project)
    url = f"/api/v1/projects/{project}/environments/production"
    # Protected before any push declares it.
    rules = {"require_promote": True, "promote_role": "admin"}
    assert ci.http.put(f"{url}/protection", json=rules, headers=ci.token("ops")).status_code == 200
    build = ci.push(
        project, repo, pipeline({"production": f"auto: true, listen: 127.0.0.1:{production}, {QUICK}"})
    )
    assert build["status"] == "success", build
    assert ci.deployments(project, "production") == []
    assert not listening(production)

    below = ci.http.post(f"{url}/promote", json={"build_id": build["id"]}, headers=ci.token("ops"))
    assert below.status_code == 403 and "need the admin role" in below.json()["detail"], below.text
    promoted = ci.http.post(f"{url}/promote", json={"build_id": build["id"]})  # the admin token
    assert promoted.status_code == 202, promoted.text
    ci.wait_deployed(project, "production", build["sha"])
    assert served(production) == build["sha"]


def test_a_secret_scoped_to_production_reaches_only_production_and_its_allowed_jobs(ci: Server) -> None:
    project, staging, production = "acme/db", free_port(), free_port()
    repo = ci.project(project)
    ci.secret_set(project, "DB_URL", SHARED_VALUE)
    ci.secret_set(project, "DB_URL", PRODUCTION_VALUE, "--environment", "production")
    listed = ci.http.get(f"/api/v1/projects/{project}/secrets").json()
    assert [(s["name"], s["environment"]) for s in listed] == [("DB_URL", None), ("DB_URL", "production")]
    jobs = f"""\
  deploy-check:
    image: ciserver-test/busybox:latest
    environment: production
    secrets: [DB_URL]
    script: ['[ "$DB_URL" = "{PRODUCTION_VALUE}" ]']
  plain:
    image: ciserver-test/busybox:latest
    secrets: [DB_URL]
    script: ['[ "$DB_URL" = "{SHARED_VALUE}" ]']
"""
    environments = {
        name: f"auto: true, listen: 127.0.0.1:{port}, {QUICK}, secrets: [DB_URL]"
        for name, port in (("staging", staging), ("production", production))
    }
    file = pipeline(environments, jobs)
    main = ci.push(project, repo, file)
    assert main["status"] == "success", main  # both jobs saw the value they expect
    ci.wait_deployed(project, "production", main["sha"])
    ci.wait_deployed(project, "staging", main["sha"])
    assert served(production, "/secret") == PRODUCTION_VALUE
    assert served(staging, "/secret") == SHARED_VALUE

    feature = ci.push(project, repo, file, branch="feature/leak")
    assert feature["status"] == "error", feature
    job = next(j for j in feature["jobs"] if j["name"] == "deploy-check")
    assert job["status"] == "error", job
    assert job["error"] == (
        "secrets: DB_URL: environment 'production' takes the default branch 'main' (its rules on the "
        "server); a job of branch 'feature/leak' may not use it or its secrets"
    )
    assert PRODUCTION_VALUE not in ci.server.log(job["id"])
    plain = next(j for j in feature["jobs"] if j["name"] == "plain")
    assert plain["status"] == "success", plain  # the project's value, as on main
