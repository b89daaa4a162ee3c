"""A pusher's image build, through a real push to a real server: it reads nothing but its own
checkout, its RUN steps are held as jobs are, a secret never becomes a build arg, and the workers'
reapers leave its step containers alone while none stay behind."""

from __future__ import annotations

import os
import re
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from redis import Redis

from ciserver.deploy.names import release_tag
from tests.support.engine import BUSYBOX
from tests.support.git import commit, make_repo
from tests.support.server import CiServer
from tests.support.services import redis_database

# One database is enough here: an image build's isolation is the engine's and the builder's, the same
# whatever the database.
ONE_DATABASE = True

JOB_CAPABILITY_MASK = "00000000000000cb"  # CHOWN, DAC_OVERRIDE, FOWNER, SETGID, SETUID


def pipeline(image_build: str, **job: str) -> str:
    extra = "".join(f"    {key}: {value}\n" for key, value in job.items())
    return f"jobs:\n  package:\n    image_build: {image_build}\n{extra}"


def pushed(
    server: CiServer, tmp_path: Path, files: dict[str, str], links: dict[str, str]
) -> tuple[str, str, int]:
    """A new project whose first commit holds `files` and the symbolic links `links`; its build id."""
    name = f"octo/build{uuid.uuid4().hex[:8]}"
    repo = tmp_path / "repo"
    make_repo(repo, {"README": "hi\n"})
    for link, target in links.items():
        (repo / link).parent.mkdir(parents=True, exist_ok=True)
        os.symlink(target, repo / link)
    sha = commit(repo, files, "the build")
    server.add_project(name, repo)
    response = server.push_github(name, sha)
    assert response.status_code == 202, response.text
    return name, sha, response.json()["build_id"]


def image_exists(reference: str) -> bool:
    return subprocess.run(["docker", "image", "inspect", reference], capture_output=True).returncode == 0


def release_image(name: str, sha: str) -> str:
    return release_tag(name, sha)


@pytest.mark.parametrize(
    ("image_build", "links", "message"),
    [
        # The workspace is DATA/workspaces/BUILD/JOB: three levels up is the whole data dir.
        ("{context: ctx}", {"ctx": "../../.."}, "image_build.context: 'ctx' leads outside the workspace"),
        (
            "{dockerfile: app.Dockerfile}",
            {"app.Dockerfile": "../../../secret.key"},
            "image_build.dockerfile: 'app.Dockerfile' leads outside the workspace",
        ),
        (
            "{context: .}",
            {"docs/key": "../../../../secret.key"},
            "the build context holds 'docs/key', a link leading outside the workspace",
        ),
    ],
)
def test_a_pushed_link_never_brings_the_data_dir_into_an_image_build(
    ciserver: CiServer, tmp_path: Path, image_build: str, links: dict[str, str], message: str
) -> None:
    files = {"pipelines.yml": pipeline(image_build), "Dockerfile": f"FROM {BUSYBOX}\nCOPY . /stolen/\n"}
    name, sha, build_id = pushed(ciserver, tmp_path, files, links)
    build = ciserver.wait_build(build_id, timeout=90)
    (job,) = build["jobs"]
    assert (build["status"], job["status"]) == ("failed", "failed"), build
    assert message in job["error"], job
    assert message in ciserver.log(job["id"])
    assert not image_exists(release_image(name, sha))


def test_the_run_steps_of_a_pushed_dockerfile_are_held_as_jobs_are(
    ciserver: CiServer, tmp_path: Path
) -> None:
    dockerfile = (
        f"FROM {BUSYBOX}\n"
        "RUN grep -E '^(CapEff|NoNewPrivs)' /proc/self/status\n"
        "RUN ping -c 1 -W 1 127.0.0.1 || echo no-raw-sockets\n"
        "RUN for i in $(seq 60); do sleep 3 & done; wait\n"
    )
    files = {"pipelines.yml": pipeline("{}", resources="{pids: 32}"), "Dockerfile": dockerfile}
    name, sha, build_id = pushed(ciserver, tmp_path, files, {})
    build = ciserver.wait_build(build_id, timeout=90)
    (job,) = build["jobs"]
    log = ciserver.log(job["id"])
    assert re.search(rf"CapEff:\s+{JOB_CAPABILITY_MASK}", log) and re.search(r"NoNewPrivs:\s+1", log), log
    assert "no-raw-sockets" in log
    assert job["status"] == "failed" and "returned a non-zero code" in job["error"], job  # the pids limit
    assert not image_exists(release_image(name, sha))


def test_a_secret_is_refused_as_a_build_arg(ciserver: CiServer, tmp_path: Path) -> None:
    files = {
        "pipelines.yml": pipeline("{build_args: {TOKEN: $DEPLOY_TOKEN}}", secrets="[DEPLOY_TOKEN]"),
        "Dockerfile": f"FROM {BUSYBOX}\nARG TOKEN\nRUN echo $TOKEN > /token\n",
    }
    name = f"octo/build{uuid.uuid4().hex[:8]}"
    repo = tmp_path / "repo"
    sha = make_repo(repo, files)
    ciserver.add_project(name, repo)
    response = ciserver.http.put(
        f"/api/v1/projects/{name}/secrets/DEPLOY_TOKEN", json={"value": "tok-" + uuid.uuid4().hex}
    )
    assert response.status_code in (200, 201), response.text
    build = ciserver.wait_build(ciserver.push_github(name, sha).json()["build_id"], timeout=90)
    (job,) = build["jobs"]
    assert job["status"] == "error", job
    assert "image_build.build_args.TOKEN: holds the value of secret DEPLOY_TOKEN" in job["error"]
    assert not image_exists(release_image(name, sha))


@pytest.fixture
def reaping(tmp_path: Path, redis_url: str, busybox_image: str) -> Iterator[CiServer]:
    """Two workers whose reapers run every second and a half (a TTL of 3 s), on a Redis database
    of their own."""
    own_db = redis_database(redis_url, 9)
    Redis.from_url(own_db).flushdb()
    (tmp_path / "server").mkdir()
    server = CiServer(tmp_path / "server", own_db, CISERVER_WORKER_TTL="3")
    server.start(workers=2)
    try:
        yield server
    finally:
        server.stop()


def test_an_image_build_beside_reaping_workers_keeps_its_steps_and_leaves_no_container(
    reaping: CiServer, tmp_path: Path
) -> None:
    dockerfile = (
        f"FROM {BUSYBOX}\nRUN sleep 2\nLABEL a=1\nCOPY README /readme\nLABEL b=2\nRUN sleep 2\nLABEL c=3\n"
        "RUN sleep 2\n"
    )
    name, sha, build_id = pushed(
        reaping, tmp_path, {"pipelines.yml": pipeline("{}"), "Dockerfile": dockerfile}, {}
    )
    build = reaping.wait_build(build_id, timeout=120)
    assert build["status"] == "success", (build, reaping.log(build["jobs"][0]["id"]))
    assert image_exists(release_image(name, sha))
    left = subprocess.run(
        ["docker", "ps", "-aq", "--filter", f"label=ciserver.data_dir={reaping.root / 'data'}"],
        capture_output=True,
        text=True,
    ).stdout.split()
    assert left == []
    removed = [
        line
        for log in (reaping.root).glob("test-worker-*.log")
        for line in log.read_text().splitlines()
        if "removed containers of jobs" in line
    ]
    assert removed == []
    subprocess.run(["docker", "image", "rm", "-f", release_image(name, sha)], capture_output=True)


def test_a_project_cannot_run_or_build_on_the_release_image_of_another(
    ciserver: CiServer, tmp_path: Path
) -> None:
    dockerfile = f"FROM {BUSYBOX}\nRUN echo their-secret-sauce > /sauce\n"
    theirs, their_sha, their_build = pushed(
        ciserver, tmp_path / "theirs", {"pipelines.yml": pipeline("{}"), "Dockerfile": dockerfile}, {}
    )
    assert ciserver.wait_build(their_build, timeout=90)["status"] == "success"
    stolen = release_image(theirs, their_sha)
    files = {
        "pipelines.yml": f"jobs:\n  run:\n    image: {stolen}\n    script: [cat /sauce]\n"
        "  package:\n    image_build: {}\n",
        "Dockerfile": f"FROM {stolen}\nRUN cat /sauce\n",
    }
    *_, build_id = pushed(ciserver, tmp_path / "mine", files, {})
    build = ciserver.wait_build(build_id, timeout=90)
    jobs = {job["name"]: job for job in build["jobs"]}
    assert jobs["run"]["status"] == "error" and f"was built by project {theirs}" in jobs["run"]["error"]
    assert (
        jobs["package"]["status"] == "failed" and f"was built by project {theirs}" in jobs["package"]["error"]
    )
    assert "their-secret-sauce" not in ciserver.log(jobs["run"]["id"]) + ciserver.log(jobs["package"]["id"])
    subprocess.run(["docker", "image", "rm", "-f", stolen], capture_output=True)
