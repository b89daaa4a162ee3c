"""The events table on a real database (SQLite and PostgreSQL): every state a user can see of a build,
its jobs and a deployment is an event, in order, written with its change; and a reader resumes from
an id, filters by project, and sees a late commit on PostgreSQL."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from redis import Redis
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from ciserver.config import Settings
from ciserver.event_bus import CHANNEL, install_publisher
from ciserver.event_feed import EventCursor, new_cursor, read_new
from ciserver.outbox import remove_old_events
from ciserver.pipeline import JobOptions, Retry
from ciserver.states import DeploymentStatus, Status
from ciserver.store import deployments as deploy_store
from ciserver.store import releases
from ciserver.store.builds import PushRecord, cancel_build, record_push, requeue_builds, retry_build
from ciserver.store.db import session_scope
from ciserver.store.dispatch import advance, play_manual
from ciserver.store.events import events_after, forget_events_before
from ciserver.store.job_end import AttemptEnd, end_attempt, end_lost_job
from ciserver.store.models import Build, Deployment, Event, Job, Project, utcnow
from ciserver.store.transitions import add_jobs, start_build, start_job
from tests.support.store import Planned, green_build, new_project

PIPELINE = """\
image: busybox
jobs:
  package: {image_build: {context: .}}
environments:
  staging: {auto: true, listen: "127.0.0.1:9001", strategy: {canary: {steps: [50, 100]}}}
service: {port: 8000, health: /healthz}
"""


def push(sha: str = "a" * 40, branch: str = "main") -> PushRecord:
    return PushRecord(
        ref=f"refs/heads/{branch}", branch=branch, tag=None, sha=sha, before=None,
        message="m", author="a", changed_files=None, default_branch="main",
    )  # fmt: skip


def seen(session: Session, after: int = 0) -> list[tuple[str, int, str]]:
    """(kind, subject id, status) of every event after `after`, oldest first."""
    return [(e.kind, e.subject_id, e.status) for e in events_after(session, after, limit=10_000)]


def assert_every_row_has_its_state_as_last_event(
    session: Session, kinds: tuple[str, ...] = ("build", "job", "deployment")
) -> None:
    """What a client following the stream ends up believing equals the database, for every row."""
    session.flush()
    last: dict[tuple[str, int], Event] = {}
    for event in events_after(session, 0, limit=100_000):
        last[(event.kind, event.subject_id)] = event
    for kind, model in (("build", Build), ("job", Job), ("deployment", Deployment)):
        if kind not in kinds:
            continue
        for row in session.scalars(select(model).execution_options(populate_existing=True)):
            event = last.get((kind, row.id))
            assert event is not None, f"{kind} {row.id} has no event"
            assert event.status == row.status.value, f"{kind} {row.id}: {row.status} but told {event.status}"
            if kind == "deployment":
                assert (event.data["weight"], event.data["step"]) == (row.weight, row.step)


def run_job(session: Session, job_id: int, status: Status = Status.success) -> None:
    assert start_job(session, job_id, "w.1") is not None
    end_attempt(session, job_id, AttemptEnd(status, exit_code=0 if status == Status.success else 1))


def test_a_pushed_build_and_its_jobs_are_told_from_queued_to_success_in_order(session: Session) -> None:
    project = new_project(session)
    build, _ = record_push(session, project, push(), forge="github", delivery_id="d-1")
    start_build(session, build.id)
    unit, package = add_jobs(session, build.id, [Planned("unit"), Planned("package", after=("unit",))])
    advance(session, build.id)
    run_job(session, unit.id)
    run_job(session, package.id)

    b, u, p = build.id, unit.id, package.id
    assert seen(session) == [
        ("build", b, "queued"),
        ("build", b, "running"),
        ("job", u, "queued"),
        ("job", p, "queued"),
        ("job", u, "running"),
        ("job", u, "success"),
        ("job", p, "running"),
        ("job", p, "success"),
        ("build", b, "success"),
    ]
    final = events_after(session, 0)[-1]
    assert final.data["project"] == "octo/app"
    assert final.data["sha"] == "a" * 40
    assert final.data["started_at"] is not None and final.data["finished_at"] is not None
    job_event = events_after(session, 0)[5].data
    assert (job_event["name"], job_event["build_id"], job_event["exit_code"]) == ("unit", b, 0)


def test_a_redelivered_push_tells_nothing_new(session: Session) -> None:
    project = new_project(session)
    record_push(session, project, push(), forge="github", delivery_id="d-1")
    before = seen(session)
    record_push(session, project, push(), forge="github", delivery_id="d-1")
    assert seen(session) == before


def test_failure_skip_cancel_retry_requeue_and_a_lost_worker_are_all_told(session: Session) -> None:
    project = new_project(session)
    build, _ = record_push(session, project, push(), forge="github", delivery_id=None)
    start_build(session, build.id)
    retried = Planned("flaky", options=JobOptions(retry=Retry(max=1)))
    flaky, after = add_jobs(session, build.id, [retried, Planned("after", after=("flaky",))])
    advance(session, build.id)
    mark = events_after(session, 0)[-1].id
    run_job(session, flaky.id, Status.failed)  # its retry policy queues it again
    assert start_job(session, flaky.id, "w.2") is not None
    end_lost_job(session, flaky.id, "worker w.2 was lost")  # no retry left: error, `after` skipped
    assert seen(session, mark) == [
        ("job", flaky.id, "running"),
        ("job", flaky.id, "queued"),
        ("job", flaky.id, "running"),
        ("job", flaky.id, "error"),
        ("job", after.id, "skipped"),
        ("build", build.id, "error"),
    ]
    assert events_after(session, mark)[1].data["attempt"] == 2

    mark = events_after(session, 0)[-1].id
    retry = retry_build(session, build)
    start_build(session, retry.id)
    assert requeue_builds(session, [retry.id]) == [retry.id]  # its planning was lost
    start_build(session, retry.id)
    (waiting,) = add_jobs(session, retry.id, [Planned("later")])
    cancel_build(session, retry.id)
    assert seen(session, mark) == [
        ("build", retry.id, "queued"),
        ("build", retry.id, "running"),
        ("build", retry.id, "queued"),
        ("build", retry.id, "running"),
        ("job", waiting.id, "queued"),
        ("build", retry.id, "canceled"),
        ("job", waiting.id, "canceled"),
    ]
    assert_every_row_has_its_state_as_last_event(session)


def test_a_manual_job_played_is_told_queued_again_with_its_build_running(session: Session) -> None:
    project = new_project(session)
    build, _ = record_push(session, project, push(), forge="github", delivery_id=None)
    start_build(session, build.id)
    unit, ship = add_jobs(
        session, build.id, [Planned("unit"), Planned("ship", after=("unit",), when="manual")]
    )
    advance(session, build.id)
    run_job(session, unit.id)
    assert seen(session)[-2:] == [("job", ship.id, "skipped"), ("build", build.id, "success")]
    mark = events_after(session, 0)[-1].id
    session.refresh(ship)
    assert play_manual(session, ship)
    assert seen(session, mark) == [("build", build.id, "running"), ("job", ship.id, "queued")]
    assert_every_row_has_its_state_as_last_event(session)


def test_a_deployment_is_told_as_it_is_created_claimed_moved_paused_resumed_and_finished(
    session: Session,
) -> None:
    project = new_project(session)
    (first,) = releases.deployments_for_green_build(session, green_build(session, project, PIPELINE).id)
    deploy_store.claim(session, first, "w.1")
    deploy_store.save_progress(session, first, color="blue", address="127.0.0.1:1", weight=100)
    deploy_store.save_progress(session, first, step=1)
    deploy_store.save_progress(session, first, color="blue")  # neither weight nor step: nothing to tell
    deploy_store.finish(session, first, DeploymentStatus.succeeded)
    (second,) = releases.deployments_for_green_build(session, green_build(session, project, PIPELINE).id)
    (third,) = releases.deployments_for_green_build(session, green_build(session, project, PIPELINE).id)
    mark = events_after(session, 0)[-1].id
    deploy_store.claim(session, third, "w.1")
    deploy_store.save_progress(session, third, weight=50)
    deploy_store.pause(session, third)
    row = session.get_one(Deployment, third)
    deploy_store.request_control(session, row, "resume", "token:1")
    deploy_store.claim(session, third, "w.2")  # taken up again: no change a user sees
    deploy_store.finish(session, third, DeploymentStatus.rolled_back, "5xx")

    told = [(e.subject_id, e.status, e.data["weight"], e.data["step"]) for e in events_after(session, 0)]
    assert told[:5] == [
        (first, "pending", 0, 0),
        (first, "progressing", 0, 0),
        (first, "progressing", 100, 0),
        (first, "progressing", 100, 1),
        (first, "succeeded", 100, 1),
    ]
    assert (second, "failed", 0, 0) in told  # superseded by the third, waiting behind it
    after_mark = [(e.subject_id, e.status, e.data["weight"]) for e in events_after(session, mark)]
    assert after_mark == [
        (third, "progressing", 0),
        (third, "progressing", 50),
        (third, "paused", 50),
        (third, "progressing", 50),
        (third, "rolled_back", 50),
    ]
    data = events_after(session, mark)[-1].data
    assert (data["environment"], data["strategy"], data["reason"]) == ("staging", "canary", "5xx")
    assert_every_row_has_its_state_as_last_event(session, kinds=("deployment",))  # builds made by hand


def test_a_reader_resumes_after_an_id_and_keeps_to_one_project(database_url: str) -> None:
    with session_scope(database_url) as session:
        app, other = new_project(session), new_project(session, "octo/other")
        app_id, other_id = app.id, other.id
        record_push(session, app, push("1" * 40), forge="github", delivery_id=None)
    cursor = new_cursor(database_url, None)  # from now on: the first build is not shown
    with session_scope(database_url) as session:
        app = session.get_one(Project, app_id)
        other = session.get_one(Project, other_id)
        second, _ = record_push(session, app, push("2" * 40), forge="github", delivery_id=None)
        record_push(session, other, push("3" * 40), forge="github", delivery_id=None)
        start_build(session, second.id)
    shown = read_new(database_url, cursor)
    assert [(f["project"], f["sha"][0], f["status"]) for f in shown] == [
        ("octo/app", "2", "queued"),
        ("octo/other", "3", "queued"),
        ("octo/app", "2", "running"),
    ]
    assert read_new(database_url, cursor) == []  # shown once
    resumed = read_new(database_url, EventCursor(shown[0]["event_id"]))
    assert [f["event_id"] for f in resumed] == [f["event_id"] for f in shown[1:]]
    only_app = read_new(database_url, EventCursor(0), project_id=app_id)
    assert [(f["sha"][0], f["status"]) for f in only_app] == [
        ("1", "queued"),
        ("2", "queued"),
        ("2", "running"),
    ]
    assert {f["kind"] for f in only_app} == {"build"}


def test_on_postgresql_an_event_that_commits_after_a_newer_one_is_still_shown(postgres_url: str) -> None:
    with session_scope(postgres_url) as session:
        ids = new_project(session).id, new_project(session, "octo/other").id
    cursor = new_cursor(postgres_url, None)
    with session_scope(postgres_url) as slow:
        record_push(slow, slow.get_one(Project, ids[0]), push("1" * 40), forge="x", delivery_id=None)
        # It holds the lower id, not yet committed, while another project's push commits.
        with session_scope(postgres_url) as quick:
            record_push(quick, quick.get_one(Project, ids[1]), push("2" * 40), forge="x", delivery_id=None)
        assert [f["sha"][0] for f in read_new(postgres_url, cursor)] == ["2"]
    assert [f["sha"][0] for f in read_new(postgres_url, cursor)] == ["1"]
    assert read_new(postgres_url, cursor) == []


def test_the_cursor_lets_go_of_old_ids_once_its_hold_is_over() -> None:
    now = [0.0]
    cursor = EventCursor(10, hold=3.0, clock=lambda: now[0])
    assert cursor.low == 10
    cursor.fresh([Event(id=12)])
    assert (cursor.last, cursor.low, cursor.window) == (12, 10, 1)
    assert cursor.fresh([Event(id=12)]) == []  # read again within the hold: not shown twice
    now[0] = 3.5
    assert (cursor.low, cursor.window) == (12, 0)


def test_events_past_their_retention_are_removed_oldest_first(session: Session) -> None:
    project = new_project(session)
    for n in range(5):
        record_push(session, project, push(str(n) * 40), forge="github", delivery_id=None)
    rows = list(session.scalars(select(Event).order_by(Event.id)))
    for row in rows[:3]:
        row.at = utcnow() - timedelta(days=8)
    session.flush()
    assert forget_events_before(session, utcnow() - timedelta(days=7), chunk=2) == 3
    assert [e.id for e in events_after(session, 0)] == [row.id for row in rows[3:]]
    assert forget_events_before(session, utcnow() - timedelta(days=7)) == 0


def test_a_commit_that_added_events_publishes_a_wake_up_and_a_rollback_does_not(
    redis_url: str, database_url: str
) -> None:
    install_publisher(redis_url)
    pubsub = Redis.from_url(redis_url).pubsub()
    pubsub.subscribe(CHANNEL)
    assert pubsub.get_message(timeout=2)["type"] == "subscribe"  # type: ignore[index]
    with session_scope(database_url) as session:
        project_id = new_project(session).id  # no event: no wake-up
    with pytest.raises(RuntimeError), session_scope(database_url) as session:
        record_push(session, session.get_one(Project, project_id), push(), forge="x", delivery_id=None)
        raise RuntimeError("rolled back")
    with session_scope(database_url) as session:
        record_push(
            session, session.get_one(Project, project_id), push("b" * 40), forge="x", delivery_id=None
        )
        newest = session.scalar(select(func.max(Event.id)))
    message = pubsub.get_message(timeout=2)
    assert message is not None and message["data"] == str(newest).encode()
    assert pubsub.get_message(timeout=0.2) is None
    pubsub.close()


def test_the_outbox_removes_events_past_the_retention_setting(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data", event_retention=3600)
    with session_scope(settings.db_url) as session:
        project = new_project(session)
        record_push(session, project, push("1" * 40), forge="github", delivery_id=None)
        record_push(session, project, push("2" * 40), forge="github", delivery_id=None)
        old = session.scalars(select(Event).order_by(Event.id)).first()
        assert old is not None
        old.at = utcnow() - timedelta(hours=2)
    assert remove_old_events(settings) == 1
    with session_scope(settings.db_url) as session:
        assert [e.data["sha"][0] for e in events_after(session, 0)] == ["2"]
