"""`ciserver up`'s progress lines, from the events they are made of: what, its status, where to read
more; and nothing a pusher wrote can reach the terminal as a control sequence."""

from __future__ import annotations

from pathlib import Path

from ciserver.progress import ProgressPrinter, line_of, shown
from ciserver.states import Status
from ciserver.store.builds import PushRecord, record_push
from ciserver.store.db import session_scope
from ciserver.store.transitions import add_jobs, end_build, end_job, start_build, start_job
from tests.support.store import Planned, new_project

URL = "http://127.0.0.1:8080"


def build(**fields: object) -> dict[str, object]:
    return {
        "kind": "build", "id": 12, "project": "acme/app", "status": "success", "ref": "refs/heads/main",
        "branch": "main", "tag": None, "sha": "1a2b3c4d" * 5, "error": None,
        "created_at": "2026-12-07T16:30:40+00:00", "started_at": "2026-12-07T16:30:40.500000+00:00",
        "finished_at": "2026-12-07T16:30:44.700000+00:00", **fields,
    }  # fmt: skip


def test_a_build_line_says_what_where_its_status_jobs_time_and_address() -> None:
    assert line_of(build(), URL, lambda build_id: 3) == (
        "build 12 acme/app main 1a2b3c4: success (3 jobs, 4.2s) http://127.0.0.1:8080/api/v1/builds/12"
    )
    assert line_of(build(status="queued", started_at=None, finished_at=None), URL, lambda _: 0) == (
        "build 12 acme/app main 1a2b3c4: queued http://127.0.0.1:8080/api/v1/builds/12"
    )
    tagged = build(status="error", branch=None, tag="v1.0", error="pipelines.yml: line 3: jobs: required")
    assert line_of(tagged, URL, lambda _: 0) == (
        "build 12 acme/app tag v1.0 1a2b3c4: error (0 jobs, 4.2s): pipelines.yml: line 3: jobs: required "
        "http://127.0.0.1:8080/api/v1/builds/12"
    )


def test_a_job_line_comes_at_its_end_only_with_exit_code_time_and_log_address() -> None:
    job = {
        "kind": "job", "id": 34, "build_id": 12, "project": "acme/app", "name": "unit", "stage": "test",
        "status": "failed", "attempt": 1, "exit_code": 1, "error": None,
        "started_at": "2026-12-07T16:30:41+00:00", "finished_at": "2026-12-07T16:30:43.100000+00:00",
    }  # fmt: skip
    assert line_of(job, URL, lambda _: 0) == (
        "job 34 acme/app build 12 unit: failed (exit 1, 2.1s) http://127.0.0.1:8080/api/v1/jobs/34/log"
    )
    assert line_of({**job, "status": "running"}, URL, lambda _: 0) is None
    assert line_of({**job, "status": "queued"}, URL, lambda _: 0) is None


def test_a_deployment_line_comes_at_every_step_with_weight_and_address() -> None:
    deployment = {
        "kind": "deployment", "id": 5, "project": "acme/app", "environment": "production", "build_id": 12,
        "action": "promote", "strategy": "canary", "status": "progressing", "weight": 25, "step": 1,
        "reason": None,
    }  # fmt: skip
    assert line_of(deployment, URL, lambda _: 0) == (
        "deployment 5 acme/app production build 12 canary: progressing, weight 25, step 1 "
        "http://127.0.0.1:8080/api/v1/deployments/5"
    )


def test_what_a_pusher_wrote_cannot_drive_the_terminal() -> None:
    hostile = build(status="failed", error="boom\x1b]0;owned\x07\x1b[2J\r\nfake line\u202e")
    line = line_of(hostile, URL, lambda _: 1)
    assert line is not None and line.isprintable()
    assert "\\x1b]0;owned\\x07\\x1b[2J\\r\\nfake line\\u202e" in line
    assert shown("x" * 500).endswith("…") and len(shown("x" * 500)) == 120


def test_the_printer_prints_what_happens_after_its_start_once(tmp_path: Path, redis_url: str) -> None:
    url = f"sqlite:///{tmp_path / 'data' / 'ciserver.db'}"
    with session_scope(url) as session:
        project = new_project(session)
        record_push(session, project, PUSH, forge="github", delivery_id="before")
    lines: list[str] = []
    printer = ProgressPrinter(url, redis_url, URL, write=lines.append)
    printer.start_here()
    with session_scope(url) as session:
        project = new_project(session, "acme/app")
        pushed, _ = record_push(session, project, PUSH, forge="github", delivery_id="after")
        start_build(session, pushed.id)
        (job,) = add_jobs(session, pushed.id, [Planned("unit")])
        start_job(session, job.id, "w.1")
        end_job(session, job.id, Status.success, exit_code=0)
        end_build(session, pushed.id, Status.success)
        build_id, job_id = pushed.id, job.id
    printer.start()
    printer.stopped.set()
    printer.join(10)
    assert lines[:2] == [
        f"build {build_id} acme/app main aaaaaaa: queued {URL}/api/v1/builds/{build_id}",
        f"build {build_id} acme/app main aaaaaaa: running {URL}/api/v1/builds/{build_id}",
    ]  # the first project's build, made before the start, is not printed
    assert lines[2].startswith(f"job {job_id} acme/app build {build_id} unit: success (exit 0, ")
    assert lines[2].endswith(f"s) {URL}/api/v1/jobs/{job_id}/log")
    assert lines[3].startswith(f"build {build_id} acme/app main aaaaaaa: success (1 job, ")
    assert len(lines) == 4


PUSH = PushRecord(
    ref="refs/heads/main", branch="main", tag=None, sha="a" * 40, before=None,
    message="m", author="a", changed_files=None, default_branch="main",
)  # fmt: skip
