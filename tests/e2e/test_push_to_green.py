"""A push travels from a forge's webhook to a green build with its log: real git, Redis, Docker
and worker processes (see the `ciserver` fixture)."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

from tests.support.engine import BUSYBOX, containers_of_job
from tests.support.git import commit, git, make_repo
from tests.support.server import CiServer

TWO_STAGES = f"""\
image: {BUSYBOX}
stages: [test, build]
jobs:
  hello:
    stage: test
    script:
      - echo "hello from $CI_PROJECT at $CI_COMMIT_SHA on $CI_COMMIT_BRANCH"
      - test -f /workspace/README
  package:
    stage: build
    script: [echo packaged]
"""


def project_name() -> str:
    return f"octo/p{uuid.uuid4().hex[:10]}"


def registered(
    ciserver: CiServer, tmp_path: Path, pipeline: str, forge: str = "github"
) -> tuple[str, str, Path]:
    name = project_name()
    repo = tmp_path / "repo"
    sha = make_repo(repo, {"pipelines.yml": pipeline, "README": "hello\n"})
    ciserver.add_project(name, repo, forge=forge)
    return name, sha, repo


def test_a_signed_github_push_builds_green_and_the_log_holds_the_output(
    ciserver: CiServer, tmp_path: Path
) -> None:
    name, sha, _ = registered(ciserver, tmp_path, TWO_STAGES)
    response = ciserver.push_github(name, sha)
    assert response.status_code == 202, response.text
    build = ciserver.wait_build(response.json()["build_id"])
    assert build["status"] == "success", build
    assert (build["project"], build["branch"], build["sha"]) == (name, "main", sha)
    assert [(j["name"], j["stage"], j["status"], j["exit_code"]) for j in build["jobs"]] == [
        ("hello", "test", "success", 0),
        ("package", "build", "success", 0),
    ]
    hello = build["jobs"][0]
    assert f"hello from {name} at {sha} on main" in ciserver.log(hello["id"])
    assert build["jobs"][1]["started_at"] >= hello["finished_at"]
    assert containers_of_job(hello["id"], ciserver.data_dir) == []


def test_a_gitlab_push_builds_green(ciserver: CiServer, tmp_path: Path) -> None:
    name, sha, _ = registered(ciserver, tmp_path, TWO_STAGES, forge="gitlab")
    assert ciserver.push_gitlab(name, sha, token="wrong").status_code == 401
    response = ciserver.push_gitlab(name, sha)
    assert response.status_code == 202, response.text
    build = ciserver.wait_build(response.json()["build_id"])
    assert build["status"] == "success", build
    assert f"at {sha} on main" in ciserver.log(build["jobs"][0]["id"])


def test_a_failing_job_fails_the_build_and_skips_the_next_stage(ciserver: CiServer, tmp_path: Path) -> None:
    pipeline = TWO_STAGES.replace("test -f /workspace/README", "echo tests failed; exit 3")
    name, sha, _ = registered(ciserver, tmp_path, pipeline)
    build = ciserver.wait_build(ciserver.push_github(name, sha).json()["build_id"])
    assert build["status"] == "failed"
    hello, package = build["jobs"]
    assert (hello["status"], hello["exit_code"]) == ("failed", 3)
    assert package["status"] == "skipped" and package["started_at"] is None
    assert "tests failed" in ciserver.log(hello["id"])


def test_a_bad_signature_is_refused_and_builds_nothing(ciserver: CiServer, tmp_path: Path) -> None:
    name, sha, _ = registered(ciserver, tmp_path, TWO_STAGES)
    response = ciserver.push_github(name, sha, secret="not-the-secret")
    assert response.status_code == 401
    assert "X-Hub-Signature-256" in response.json()["message"]
    assert ciserver.builds_of(name)["total"] == 0


def test_a_redelivered_push_makes_no_second_build(ciserver: CiServer, tmp_path: Path) -> None:
    name, sha, _ = registered(ciserver, tmp_path, TWO_STAGES)
    delivery = str(uuid.uuid4())
    first = ciserver.push_github(name, sha, delivery=delivery)
    again = ciserver.push_github(name, sha, delivery=delivery)
    assert first.status_code == 202 and again.status_code == 200
    assert again.json()["build_id"] == first.json()["build_id"] and again.json()["duplicate"] is True
    assert ciserver.builds_of(name)["total"] == 1


def test_an_invalid_pipeline_file_ends_the_build_in_error_naming_the_line(
    ciserver: CiServer, tmp_path: Path
) -> None:
    pipeline = f"image: {BUSYBOX}\njobs:\n  hello:\n    scrpit: [echo hi]\n"
    name, sha, _ = registered(ciserver, tmp_path, pipeline)
    build = ciserver.wait_build(ciserver.push_github(name, sha).json()["build_id"])
    assert build["status"] == "error"
    assert "pipelines.yml:4" in build["error"] and "scrpit" in build["error"], build["error"]
    assert build["jobs"] == []


def test_a_branch_the_pipeline_excludes_is_skipped(ciserver: CiServer, tmp_path: Path) -> None:
    pipeline = "on:\n  push:\n    branches: [main]\n" + TWO_STAGES
    name, sha, _ = registered(ciserver, tmp_path, pipeline)
    build = ciserver.wait_build(
        ciserver.push_github(name, sha, ref="refs/heads/feature/x").json()["build_id"]
    )
    assert build["status"] == "skipped"
    assert "feature/x" in build["error"]


def test_a_job_over_its_timeout_fails_soon_after_and_leaves_no_container(
    ciserver: CiServer, tmp_path: Path
) -> None:
    pipeline = f"image: {BUSYBOX}\njobs:\n  slow:\n    timeout: 2s\n    script: [echo started, sleep 60]\n"
    name, sha, _ = registered(ciserver, tmp_path, pipeline)
    build = ciserver.wait_build(ciserver.push_github(name, sha).json()["build_id"], timeout=30)
    job = build["jobs"][0]
    assert (build["status"], job["status"]) == ("failed", "failed")
    assert "timed out after 2s" in job["error"]
    from datetime import datetime

    took = datetime.fromisoformat(job["finished_at"]) - datetime.fromisoformat(job["started_at"])
    assert 2 <= took.total_seconds() < 6, took
    assert "timed out after 2s" in ciserver.log(job["id"])
    assert containers_of_job(job["id"], ciserver.data_dir) == []


def test_cancel_stops_a_running_build(ciserver: CiServer, tmp_path: Path) -> None:
    pipeline = TWO_STAGES.replace("test -f /workspace/README", "sleep 60")
    name, sha, _ = registered(ciserver, tmp_path, pipeline)
    build_id = ciserver.push_github(name, sha).json()["build_id"]
    hello = ciserver.wait_job_status(build_id, "hello", "running")
    started = time.monotonic()
    response = ciserver.http.post(f"/api/v1/builds/{build_id}/cancel")
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "canceled"
    job = ciserver.wait_job_status(build_id, "hello", "canceled")
    assert time.monotonic() - started < 10
    build = ciserver.wait_build(build_id)
    assert build["status"] == "canceled"
    assert {j["name"]: j["status"] for j in build["jobs"]} == {"hello": "canceled", "package": "canceled"}
    assert job["id"] == hello["id"] and containers_of_job(hello["id"], ciserver.data_dir) == []
    assert ciserver.http.post(f"/api/v1/builds/{build_id}/cancel").status_code == 409


def test_jobs_of_one_stage_run_at_the_same_time_on_two_workers(ciserver: CiServer, tmp_path: Path) -> None:
    pipeline = f"""\
image: {BUSYBOX}
jobs:
  left: {{script: [sleep 2]}}
  right: {{script: [sleep 2]}}
"""
    name, sha, _ = registered(ciserver, tmp_path, pipeline)
    build = ciserver.wait_build(ciserver.push_github(name, sha).json()["build_id"])
    assert build["status"] == "success"
    left, right = build["jobs"]
    assert left["started_at"] < right["finished_at"] and right["started_at"] < left["finished_at"], build[
        "jobs"
    ]


def test_retry_builds_the_same_commit_again(ciserver: CiServer, tmp_path: Path) -> None:
    name, sha, _ = registered(ciserver, tmp_path, TWO_STAGES)
    first = ciserver.wait_build(ciserver.push_github(name, sha).json()["build_id"])
    response = ciserver.http.post(f"/api/v1/builds/{first['id']}/retry")
    assert response.status_code == 202
    second = ciserver.wait_build(response.json()["build_id"])
    assert (second["status"], second["sha"], second["retry_of"]) == ("success", sha, first["id"])


def test_a_missing_image_is_an_error_that_names_it(ciserver: CiServer, tmp_path: Path) -> None:
    pipeline = "image: ciserver-test/no-such-image:1\njobs:\n  hello: {script: [echo hi]}\n"
    name, sha, _ = registered(ciserver, tmp_path, pipeline)
    build = ciserver.wait_build(ciserver.push_github(name, sha).json()["build_id"])
    assert build["status"] == "error"
    assert "ciserver-test/no-such-image:1" in build["jobs"][0]["error"]


def test_the_log_reads_from_an_offset_and_streams_as_server_sent_events(
    ciserver: CiServer, tmp_path: Path
) -> None:
    loop = "for i in 1 2 3 4 5; do echo line $i; sleep 0.3; done"
    pipeline = f"image: {BUSYBOX}\njobs:\n  count:\n    script: ['{loop}']\n"
    name, sha, _ = registered(ciserver, tmp_path, pipeline)
    build_id = ciserver.push_github(name, sha).json()["build_id"]
    job = ciserver.wait_job_status(build_id, "count", "running")
    with ciserver.http.stream("GET", f"/api/v1/jobs/{job['id']}/log/stream") as stream:
        assert stream.headers["content-type"].startswith("text/event-stream")
        events = parse_sse("\n".join(stream.iter_lines()))
    logs = [e for e in events if e.get("event") == "log"]
    text = "".join(json.loads(e["data"])["text"] for e in logs)
    assert [ln for ln in text.splitlines() if ln.startswith("line")] == [f"line {i}" for i in range(1, 6)]
    assert len(logs) > 1, "the log arrived in one piece, not while the job ran"
    assert int(logs[-1]["id"]) == len(text.encode())
    assert json.loads(events[-1]["data"]) == {"status": "success"}
    full = ciserver.http.get(f"/api/v1/jobs/{job['id']}/log", params={"offset": 0})
    assert full.text == text and full.headers["X-Log-Offset"] == str(len(full.content))
    tail = ciserver.http.get(f"/api/v1/jobs/{job['id']}/log", params={"offset": 7})
    assert tail.content == full.content[7:]
    resumed = parse_sse(
        ciserver.http.get(
            f"/api/v1/jobs/{job['id']}/log/stream", headers={"Last-Event-ID": logs[0]["id"]}
        ).text
    )
    rest = "".join(json.loads(e["data"])["text"] for e in resumed if e.get("event") == "log")
    assert rest.encode() == full.content[int(logs[0]["id"]) :]


def parse_sse(text: str) -> list[dict[str, str]]:
    """Events as dicts of their fields (one data line each, as the server sends JSON)."""
    events, event = [], {}
    for line in text.replace("\r\n", "\n").split("\n"):
        if not line:
            if event:
                events.append(event)
            event = {}
        elif not line.startswith(":"):
            key, _, value = line.partition(":")
            event[key] = value.removeprefix(" ")
    if event:
        events.append(event)
    return events


def test_a_python_project_runs_its_tests_with_git_at_the_pushed_commit(
    ciserver: CiServer, tmp_path: Path
) -> None:
    pipeline = """\
image: ciserver-test/python:3.11
jobs:
  unit:
    script:
      - test "$(git rev-parse HEAD)" = "$CI_COMMIT_SHA"
      - python3 -m pytest -q
"""
    name = project_name()
    repo = tmp_path / "repo"
    make_repo(repo, {"pipelines.yml": pipeline, "test_math.py": "def test_adds():\n    assert 1 + 1 == 2\n"})
    ciserver.add_project(name, repo)
    # The branch has moved on by the time the build runs: the build must still test the pushed commit.
    pushed = git(repo, "rev-parse", "HEAD")
    commit(repo, {"test_math.py": "def test_adds():\n    assert 1 + 1 == 3\n"}, "break it")
    build = ciserver.wait_build(ciserver.push_github(name, pushed).json()["build_id"], timeout=120)
    assert build["status"] == "success", build
    assert "1 passed" in ciserver.log(build["jobs"][0]["id"])


def test_shell_metacharacters_in_a_branch_and_a_message_reach_no_shell(
    ciserver: CiServer, tmp_path: Path
) -> None:
    marker = f"/tmp/ciserver-pwned-{uuid.uuid4().hex[:8]}"
    branch = f"x/$(touch${{IFS}}{marker})`touch${{IFS}}{marker}`;touch${{IFS}}{marker}"
    message = f'"; touch {marker}; echo "$(touch {marker})'
    pipeline = f"""\
image: {BUSYBOX}
jobs:
  echo:
    script:
      - 'echo "branch=[$CI_COMMIT_BRANCH]"'
      - test ! -e {marker}
"""
    name = project_name()
    repo = tmp_path / "repo"
    sha = make_repo(repo, {"pipelines.yml": pipeline}, branch=branch)
    ciserver.add_project(name, repo)
    response = ciserver.push_github(name, sha, ref=f"refs/heads/{branch}", message=message)
    assert response.status_code == 202, response.text
    build = ciserver.wait_build(response.json()["build_id"])
    assert build["status"] == "success", build
    assert (build["branch"], build["message"]) == (branch, message)
    assert f"branch=[{branch}]" in ciserver.log(build["jobs"][0]["id"])
    assert not Path(marker).exists()
