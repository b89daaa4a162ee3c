"""The pipeline features a team moving from GitLab CI or Woodpecker relies on, end to end: real git
repositories, Redis, worker processes and Docker containers (see the `ciserver` fixture)."""

from __future__ import annotations

import hashlib
import subprocess
import threading
import uuid
from pathlib import Path
from typing import Any

from ciserver.deploy.names import release_tag
from tests.support.engine import BUSYBOX
from tests.support.git import commit, make_repo
from tests.support.server import CiServer


def new_project(
    ciserver: CiServer, tmp_path: Path, pipeline: str, files: dict[str, str] | None = None
) -> tuple[str, str, Path]:
    name = f"octo/p{uuid.uuid4().hex[:10]}"
    repo = tmp_path / "repo"
    sha = make_repo(repo, {"pipelines.yml": pipeline, **(files or {})})
    ciserver.add_project(name, repo)
    return name, sha, repo


def build_of(ciserver: CiServer, name: str, sha: str, ref: str = "refs/heads/main") -> dict[str, Any]:
    response = ciserver.push_github(name, sha, ref=ref)
    assert response.status_code == 202, response.text
    return ciserver.wait_build(response.json()["build_id"], timeout=120)


def jobs_of(build: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {job["name"]: job for job in build["jobs"]}


def test_a_job_with_needs_starts_before_the_rest_of_its_stage_ends(
    ciserver: CiServer, tmp_path: Path
) -> None:
    pipeline = f"""\
image: {BUSYBOX}
stages: [build, test]
jobs:
  slow:
    stage: build
    script: [sleep 4]
  quick:
    stage: build
    script: [echo built]
  after_quick:
    stage: test
    needs: [quick]
    script: [echo tested]
  after_all:
    stage: test
    script: [echo last]
"""
    name, sha, _ = new_project(ciserver, tmp_path, pipeline)
    build = build_of(ciserver, name, sha)
    assert build["status"] == "success", build
    jobs = jobs_of(build)
    assert jobs["after_quick"]["after"] == ["quick"]
    assert jobs["after_quick"]["started_at"] < jobs["slow"]["finished_at"]
    assert jobs["after_all"]["started_at"] >= jobs["slow"]["finished_at"]


def test_when_and_allow_failure_decide_what_runs_and_the_build_status(
    ciserver: CiServer, tmp_path: Path
) -> None:
    pipeline = f"""\
image: {BUSYBOX}
stages: [test, report]
jobs:
  flaky:
    stage: test
    allow_failure: true
    script: [exit 1]
  unit:
    stage: test
    script: [echo ok]
  notify_failure:
    stage: report
    when: on_failure
    script: [echo failed]
  cleanup:
    stage: report
    when: always
    script: [echo cleanup]
  deploy:
    stage: report
    when: manual
    script: [echo deployed]
"""
    name, sha, _ = new_project(ciserver, tmp_path, pipeline)
    build = build_of(ciserver, name, sha)
    assert build["status"] == "success", build
    jobs = jobs_of(build)
    assert jobs["flaky"]["status"] == "failed" and jobs["flaky"]["allow_failure"] is True
    assert jobs["notify_failure"]["status"] == "skipped"
    assert jobs["cleanup"]["status"] == "success"
    assert jobs["deploy"]["status"] == "skipped"
    assert "POST /api/v1/jobs" in jobs["deploy"]["error"]

    viewer = {"Authorization": f"Bearer {ciserver.token_for('viewer')}"}
    assert ciserver.http.post(f"/api/v1/jobs/{jobs['deploy']['id']}/play", headers=viewer).status_code == 403
    played = ciserver.http.post(f"/api/v1/jobs/{jobs['deploy']['id']}/play")
    assert played.status_code == 202, played.text
    again = ciserver.wait_job_status(build["id"], "deploy", "success")
    assert "deployed" in ciserver.log(again["id"])
    assert ciserver.wait_build(build["id"])["status"] == "success"
    assert ciserver.http.post(f"/api/v1/jobs/{jobs['unit']['id']}/play").status_code == 409


def test_a_matrix_of_two_by_two_runs_four_jobs_with_their_variables(
    ciserver: CiServer, tmp_path: Path
) -> None:
    pipeline = f"""\
image: {BUSYBOX}
jobs:
  unit:
    matrix:
      PYTHON: ["3.10", "3.11"]
      DB: [sqlite, postgres]
    script: ['echo "python=$PYTHON db=$DB"']
"""
    name, sha, _ = new_project(ciserver, tmp_path, pipeline)
    build = build_of(ciserver, name, sha)
    assert build["status"] == "success", build
    expected = {
        f"unit [PYTHON={python}, DB={db}]": f"python={python} db={db}"
        for python in ("3.10", "3.11")
        for db in ("sqlite", "postgres")
    }
    jobs = jobs_of(build)
    assert sorted(jobs) == sorted(expected)
    for job_name, line in expected.items():
        assert line in ciserver.log(jobs[job_name]["id"]).splitlines()


def test_artifacts_of_a_build_job_reach_the_test_job_and_download(ciserver: CiServer, tmp_path: Path) -> None:
    pipeline = f"""\
image: {BUSYBOX}
stages: [build, test]
jobs:
  compile:
    stage: build
    script:
      - mkdir -p dist reports/unit
      - echo "app v1" > dist/app.whl
      - echo "<xml/>" > reports/unit/junit.xml
      - echo "not kept" > scratch.txt
    artifacts:
      paths: [dist/*.whl, reports/]
      expire_in: 7d
  check:
    stage: test
    script:
      - cat dist/app.whl
      - test -f reports/unit/junit.xml
      - test ! -f scratch.txt
"""
    name, sha, _ = new_project(ciserver, tmp_path, pipeline)
    build = build_of(ciserver, name, sha)
    assert build["status"] == "success", build
    assert "app v1" in ciserver.log(jobs_of(build)["check"]["id"])

    listed = ciserver.http.get(f"/api/v1/builds/{build['id']}/artifacts").json()
    assert sorted(a["path"] for a in listed) == ["dist/app.whl", "reports/unit/junit.xml"]
    wheel = next(a for a in listed if a["path"] == "dist/app.whl")
    assert wheel["size"] == len(b"app v1\n")
    assert wheel["sha256"] == hashlib.sha256(b"app v1\n").hexdigest()
    download = ciserver.http.get(wheel["download"])
    assert download.status_code == 200 and download.content == b"app v1\n"
    assert ciserver.http.get("/api/v1/artifacts/999999").status_code == 404


def test_an_artifact_path_leading_out_of_the_workspace_is_refused(ciserver: CiServer, tmp_path: Path) -> None:
    in_file = f"""\
image: {BUSYBOX}
jobs:
  steal:
    script: [echo hi]
    artifacts: {{paths: [../../etc/passwd]}}
"""
    name, sha, _ = new_project(ciserver, tmp_path, in_file)
    build = build_of(ciserver, name, sha)
    assert build["status"] == "error"
    assert "pipelines.yml:5: jobs.steal.artifacts.paths[0]" in build["error"]

    by_symlink = f"""\
image: {BUSYBOX}
jobs:
  steal:
    script: [ln -s /etc/passwd passwd.txt]
    artifacts: {{paths: [passwd.txt]}}
"""
    name, sha, _ = new_project(ciserver, tmp_path / "second", by_symlink)
    build = build_of(ciserver, name, sha)
    steal = jobs_of(build)["steal"]
    assert steal["status"] == "failed"
    assert "leads outside the workspace" in steal["error"]
    assert ciserver.http.get(f"/api/v1/builds/{build['id']}/artifacts").json() == []


def test_the_second_build_with_the_same_cache_key_skips_the_download(
    ciserver: CiServer, tmp_path: Path
) -> None:
    pipeline = f"""\
image: {BUSYBOX}
jobs:
  deps:
    cache:
      key: "pip-{{{{ hashFiles('requirements.txt') }}}}"
      paths: [.cache/pip]
    script:
      - |
        if [ -f .cache/pip/wheel ]; then echo "cache hit"
        else echo downloading; mkdir -p .cache/pip; echo w > .cache/pip/wheel; fi
"""
    name, sha, repo = new_project(ciserver, tmp_path, pipeline, {"requirements.txt": "requests==2\n"})
    first = build_of(ciserver, name, sha)
    assert first["status"] == "success", first
    assert "downloading" in ciserver.log(first["jobs"][0]["id"]).splitlines()

    second = build_of(ciserver, name, commit(repo, {"README": "more\n"}, "docs"))
    lines = ciserver.log(second["jobs"][0]["id"]).splitlines()
    assert "cache hit" in lines and "downloading" not in lines

    third = build_of(ciserver, name, commit(repo, {"requirements.txt": "requests==3\n"}, "bump"))
    assert "downloading" in ciserver.log(third["jobs"][0]["id"]).splitlines()


def test_a_secret_printed_by_a_job_is_masked_in_the_stored_log_and_the_stream(
    ciserver: CiServer, tmp_path: Path
) -> None:
    value = f"pypi-{uuid.uuid4().hex}"
    pipeline = f"""\
image: {BUSYBOX}
jobs:
  publish:
    secrets: [PYPI_TOKEN]
    script:
      - sleep 2
      - echo "token=$PYPI_TOKEN"
      - printf '%s' "$(echo "$PYPI_TOKEN" | cut -c1-9)"; sleep 0.5; echo "$PYPI_TOKEN" | cut -c10-
  other:
    script: ['echo "other sees ${{PYPI_TOKEN:-nothing}}"']
"""
    name, sha, _ = new_project(ciserver, tmp_path, pipeline)
    put = ciserver.http.put(f"/api/v1/projects/{name}/secrets/PYPI_TOKEN", json={"value": value})
    assert put.status_code in (200, 201), put.text
    assert value not in put.text

    build_id = ciserver.push_github(name, sha).json()["build_id"]
    job = ciserver.wait_job_status(build_id, "publish", "running")
    streamed: list[str] = []
    reader = threading.Thread(target=lambda: streamed.append(_sse_text(ciserver, job["id"])))
    reader.start()
    build = ciserver.wait_build(build_id)
    reader.join(30)
    assert build["status"] == "success", build

    stored = ciserver.log(job["id"])
    assert value not in stored and value not in streamed[0]
    assert stored.count("[masked]") >= 2, stored
    assert "token=[masked]" in streamed[0]
    assert "other sees nothing" in ciserver.log(jobs_of(build)["other"]["id"])


def _sse_text(ciserver: CiServer, job_id: int) -> str:
    parts = []
    with ciserver.http.stream("GET", f"/api/v1/jobs/{job_id}/log/stream", timeout=60) as response:
        for line in response.iter_lines():
            if line.startswith("data:"):
                parts.append(line[5:].removeprefix(" "))
    return "\n".join(parts)


def test_a_service_container_is_reachable_by_its_alias_and_removed_after(
    ciserver: CiServer, tmp_path: Path
) -> None:
    pipeline = f"""\
image: {BUSYBOX}
jobs:
  integration:
    services:
      - image: {BUSYBOX}
        alias: web
        command: [sh, -c, "mkdir -p /www && echo pong > /www/index.html && exec httpd -f -p 8080 -h /www"]
    script:
      - for i in $(seq 1 50); do wget -qO- http://web:8080/ && exit 0; sleep 0.2; done; exit 1
"""
    name, sha, _ = new_project(ciserver, tmp_path, pipeline)
    build = build_of(ciserver, name, sha)
    assert build["status"] == "success", build
    job = build["jobs"][0]
    assert "pong" in ciserver.log(job["id"])
    leftovers = subprocess.run(
        ["docker", "ps", "-aq", "--filter", f"label=ciserver.job={job['id']}"], capture_output=True, text=True
    ).stdout
    networks = subprocess.run(
        ["docker", "network", "ls", "-q", "--filter", f"label=ciserver.job={job['id']}"],
        capture_output=True,
        text=True,
    ).stdout
    assert leftovers.split() == [] and networks.split() == []


def test_an_image_build_makes_an_image_that_a_later_job_runs(ciserver: CiServer, tmp_path: Path) -> None:
    owner = f"acme{uuid.uuid4().hex[:8]}"
    pipeline = """\
stages: [build, test]
jobs:
  package:
    stage: build
    image_build:
      context: app
      build_args: {GREETING: hello}
  smoke:
    stage: test
    image: ${CI_RELEASE_IMAGE}
    script: [cat /version.txt, 'echo "greeting=$GREETING_SEEN"']
"""
    dockerfile = f"FROM {BUSYBOX}\nARG GREETING\nENV GREETING_SEEN=$GREETING\nCOPY version.txt /version.txt\n"
    repo = tmp_path / "repo"
    sha = make_repo(
        repo, {"pipelines.yml": pipeline, "app/Dockerfile": dockerfile, "app/version.txt": "shop 1.0\n"}
    )
    name = f"{owner}/shop"
    ciserver.add_project(name, repo)
    try:
        build = build_of(ciserver, name, sha)
        assert build["status"] == "success", build
        package, smoke = jobs_of(build)["package"], jobs_of(build)["smoke"]
        assert package["image_tag"] == release_tag(name, sha)
        assert package["image_id"].startswith("sha256:") and package["image_digest"]
        assert "COPY version.txt" in ciserver.log(package["id"])
        smoke_log = ciserver.log(smoke["id"])
        assert "shop 1.0" in smoke_log and "greeting=hello" in smoke_log
    finally:
        subprocess.run(["docker", "rmi", "-f", release_tag(name, sha)], capture_output=True)


def test_a_fork_bomb_and_a_memory_hog_fail_alone_while_a_sibling_succeeds(
    ciserver: CiServer, tmp_path: Path
) -> None:
    pipeline = f"""\
image: {BUSYBOX}
jobs:
  bomb:
    resources: {{pids: 64}}
    timeout: 15s
    script: ['while sleep 60 & do :; done']
  hog:
    resources: {{memory: 32m}}
    script: ['x=$(head -c 400000000 /dev/zero | tr "\\\\0" a); echo "${{#x}}"']
  sibling:
    script: [sleep 2, echo sibling fine]
"""
    name, sha, _ = new_project(ciserver, tmp_path, pipeline)
    build = build_of(ciserver, name, sha)
    jobs = jobs_of(build)
    assert jobs["bomb"]["status"] == "failed", jobs["bomb"]
    assert jobs["hog"]["status"] == "failed", jobs["hog"]
    assert jobs["hog"]["exit_code"] == 137
    assert jobs["sibling"]["status"] == "success"
    assert "sibling fine" in ciserver.log(jobs["sibling"]["id"])
    assert build["status"] == "failed"


def test_a_job_runs_without_privileges(ciserver: CiServer, tmp_path: Path) -> None:
    pipeline = f"""\
image: {BUSYBOX}
jobs:
  inspect:
    script:
      - grep -E 'NoNewPrivs|CapEff' /proc/self/status
      - if mknod /tmp/dev c 1 3 2>/dev/null; then echo "mknod allowed"; else echo "mknod refused"; fi
      - test ! -e /var/run/docker.sock && echo "no docker socket"
  offline:
    network: none
    script: [ls /sys/class/net]
  as_user:
    user: "1000:1000"
    script: ['echo "uid=$(id -u)"', touch written-by-the-job]
"""
    name, sha, _ = new_project(ciserver, tmp_path, pipeline)
    build = build_of(ciserver, name, sha)
    assert build["status"] == "success", build
    log = ciserver.log(jobs_of(build)["inspect"]["id"])
    assert "NoNewPrivs:\t1" in log and "mknod refused" in log and "no docker socket" in log
    assert ciserver.log(jobs_of(build)["offline"]["id"]).split("\n")[-2:] == ["lo", ""]
    assert "uid=1000" in ciserver.log(jobs_of(build)["as_user"]["id"])


def test_retry_runs_a_failed_job_again_per_its_policy(ciserver: CiServer, tmp_path: Path) -> None:
    pipeline = f"""\
image: {BUSYBOX}
jobs:
  flaky:
    retry: {{max: 2, when: [script_failure]}}
    script: ['echo "attempt $CI_JOB_ATTEMPT"', 'test "$CI_JOB_ATTEMPT" -ge 2']
"""
    name, sha, _ = new_project(ciserver, tmp_path, pipeline)
    build = build_of(ciserver, name, sha)
    assert build["status"] == "success", build
    flaky = build["jobs"][0]
    assert flaky["attempt"] == 2
    log = ciserver.log(flaky["id"])
    assert "ciserver: attempt 1 ended failed (exit code 1); retrying" in log
    assert log.index("attempt 1") < log.index("retrying") < log.index("attempt 2")


def test_a_new_push_to_a_branch_cancels_its_older_running_build(ciserver: CiServer, tmp_path: Path) -> None:
    pipeline = f"image: {BUSYBOX}\njobs:\n  slow:\n    script: [sleep 60]\n"
    name, first_sha, repo = new_project(ciserver, tmp_path, pipeline)
    ref = "refs/heads/feature"
    first = ciserver.push_github(name, first_sha, ref=ref).json()["build_id"]
    ciserver.wait_job_status(first, "slow", "running")
    second_sha = commit(repo, {"pipelines.yml": pipeline.replace("sleep 60", "echo quick")}, "faster")
    second = ciserver.push_github(name, second_sha, ref=ref).json()["build_id"]
    assert ciserver.wait_build(second)["status"] == "success"
    older = ciserver.wait_build(first, timeout=30)
    assert older["status"] == "canceled"
    assert f"superseded by build {second}" in older["error"]


def test_the_example_service_is_tested_built_and_its_image_answers(
    ciserver: CiServer, tmp_path: Path
) -> None:
    example = Path(__file__).resolve().parents[2] / "examples" / "hello"
    files = {path.name: path.read_text() for path in example.iterdir() if path.is_file()}
    name, sha, _ = new_project(ciserver, tmp_path, files.pop("pipelines.yml"), files)
    image = release_tag(name, sha)
    try:
        build = build_of(ciserver, name, sha)
        assert build["status"] == "success", build
        jobs = jobs_of(build)
        assert jobs["package"]["image_tag"] == image
        assert f"hello {sha[:8]}" in ciserver.log(jobs["smoke"]["id"])
    finally:
        subprocess.run(["docker", "rmi", "-f", image], capture_output=True)
