"""The dispatcher on a real database (SQLite and PostgreSQL): which job runs next, which is skipped and
why, what a retry, a manual job and the per-project limit do, the build status the jobs add up to,
and what a job's end leads to (store.job_end)."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.orm import Session

from ciserver.pipeline import JobOptions, Retry
from ciserver.states import Status, StopReason
from ciserver.store.artifacts import artifacts_of_build
from ciserver.store.dispatch import advance, play_manual, requeue_for_retry, should_retry
from ciserver.store.job_end import AttemptEnd, Verdict, end_attempt, end_lost_job
from ciserver.store.models import Build, Job
from ciserver.store.transitions import end_job, start_job
from tests.support.store import Planned, names, new_build


def job(session: Session, build_id: int, name: str) -> Job:
    found = next(j for j in session.get(Build, build_id).jobs if j.name == name)  # type: ignore[union-attr]
    session.refresh(found)
    return found


def finish(session: Session, build_id: int, name: str, status: Status, concurrency: int = 0) -> list[str]:
    """Run a dispatched job to `status`; returns the names dispatched next."""
    row = job(session, build_id, name)
    assert start_job(session, row.id, "w.1") is not None
    end_job(session, row.id, status, error=None if status == Status.success else "exit code 1")
    return names(session, advance(session, build_id, concurrency))


def status_of(session: Session, build_id: int) -> str:
    build = session.get(Build, build_id)
    session.refresh(build)
    return build.status  # type: ignore[union-attr]


def test_needs_start_a_job_as_soon_as_the_jobs_it_names_succeed(session: Session) -> None:
    build_id, first = new_build(
        session,
        [
            Planned("slow"),
            Planned("quick"),
            Planned("after_quick", after=("quick",)),
            Planned("after_all", after=("slow", "quick")),
        ],
    )
    assert first == ["slow", "quick"]
    assert finish(session, build_id, "quick", Status.success) == ["after_quick"]
    assert finish(session, build_id, "slow", Status.success) == ["after_all"]
    finish(session, build_id, "after_quick", Status.success)
    finish(session, build_id, "after_all", Status.success)
    assert status_of(session, build_id) == Status.success


def test_a_failure_skips_what_comes_after_it_naming_it_and_fails_the_build(session: Session) -> None:
    build_id, _ = new_build(session, [Planned("unit"), Planned("package", after=("unit",))])
    assert finish(session, build_id, "unit", Status.failed) == []
    package = job(session, build_id, "package")
    assert (package.status, package.error) == (Status.skipped, "'unit' ended failed")
    assert status_of(session, build_id) == Status.failed


def test_on_failure_and_always_jobs_run_after_a_failure_and_on_failure_is_skipped_otherwise(
    session: Session,
) -> None:
    plan = [
        Planned("unit"),
        Planned("notify", after=("unit",), when="on_failure"),
        Planned("cleanup", after=("unit",), when="always"),
    ]
    failing, _ = new_build(session, plan)
    assert sorted(finish(session, failing, "unit", Status.failed)) == ["cleanup", "notify"]

    passing, _ = new_build(session, plan)
    assert finish(session, passing, "unit", Status.success) == ["cleanup"]
    assert job(session, passing, "notify").error == "when: on_failure, and no job before it failed"


def test_an_allowed_failure_keeps_the_build_green_and_the_next_jobs_running(session: Session) -> None:
    build_id, _ = new_build(
        session, [Planned("lint", allow_failure=True), Planned("deploy", after=("lint",))]
    )
    assert finish(session, build_id, "lint", Status.failed) == ["deploy"]
    finish(session, build_id, "deploy", Status.success)
    assert job(session, build_id, "lint").status == Status.failed
    assert status_of(session, build_id) == Status.success


def test_a_manual_job_waits_and_playing_it_runs_it_and_the_jobs_that_need_it(session: Session) -> None:
    build_id, first = new_build(
        session,
        [
            Planned("unit"),
            Planned("deploy", after=("unit",), when="manual"),
            Planned("smoke", after=("deploy",)),
        ],
    )
    assert first == ["unit"]
    assert finish(session, build_id, "unit", Status.success) == []
    deploy = job(session, build_id, "deploy")
    assert deploy.status == Status.skipped and f"/api/v1/jobs/{deploy.id}/play" in (deploy.error or "")
    assert job(session, build_id, "smoke").error == "needs 'deploy', a manual job that has not run"
    assert status_of(session, build_id) == Status.success

    assert play_manual(session, deploy)
    assert names(session, advance(session, build_id)) == ["deploy"]
    assert status_of(session, build_id) == Status.running
    assert finish(session, build_id, "deploy", Status.success) == ["smoke"]
    finish(session, build_id, "smoke", Status.success)
    assert status_of(session, build_id) == Status.success
    assert not play_manual(session, job(session, build_id, "deploy"))


def test_retry_gives_a_new_attempt_only_for_the_reasons_its_policy_names(session: Session) -> None:
    policy = JobOptions(retry=Retry(max=1, when=["timeout", "runner_failure"]))
    build_id, _ = new_build(session, [Planned("flaky", options=policy)])
    flaky = job(session, build_id, "flaky")
    start_job(session, flaky.id, "w.1")
    assert not should_retry(flaky, Status.failed, None)
    assert should_retry(flaky, Status.failed, StopReason.timeout)
    assert should_retry(flaky, Status.error, None)
    assert not should_retry(flaky, Status.success, None)
    assert requeue_for_retry(session, flaky.id)
    assert names(session, advance(session, build_id)) == ["flaky"]
    flaky = job(session, build_id, "flaky")
    assert flaky.attempt == 2
    assert not should_retry(flaky, Status.failed, StopReason.timeout)  # max 1 retry: spent


def test_the_project_limit_holds_jobs_back_until_a_slot_frees_across_builds(session: Session) -> None:
    plan = [Planned("x"), Planned("y")]
    first, dispatched = new_build(session, plan, concurrency=2)
    second, waiting = new_build(session, plan, concurrency=2)
    assert (dispatched, waiting) == (["x", "y"], [])
    assert finish(session, first, "x", Status.success, concurrency=2) == ["x"]  # the second build's x
    assert job(session, second, "x").dispatched_at is not None
    assert job(session, second, "y").dispatched_at is None


@dataclass(frozen=True)
class Made:
    """What an attempt made: a kept file (store.artifacts.KeptFile) or an image (job_end.MadeImage)."""

    path: str = "dist/app.tar"
    size: int = 3
    sha256: str = "f" * 64
    storage_key: str = "1/dist/app.tar"
    tag: str = "ciserver/octo-app:aaaa"
    image_id: str = "sha256:1"
    digest: str = "sha256:2"


def two_jobs(session: Session, retry: Retry, first: str, second: str) -> tuple[Job, Job]:
    """Two jobs of a new build, both dispatched and neither started, with this retry policy."""
    policy = JobOptions(retry=retry)
    build_id, _ = new_build(session, [Planned(first, options=policy), Planned(second, options=policy)])
    return job(session, build_id, first), job(session, build_id, second)


def test_a_timeout_is_retried_by_the_reason_it_stopped_not_by_the_words_of_its_error(
    session: Session,
) -> None:
    slow, says_so = two_jobs(session, Retry(max=1, when=["timeout"]), "slow", "says_so")
    for row in (slow, says_so):
        start_job(session, row.id, "w.1")
    stopped = AttemptEnd(Status.failed, error="timed out after 1s", stopped_by=StopReason.timeout)
    ended = end_attempt(session, slow.id, stopped)
    assert ended is not None
    assert (ended.verdict, ended.status, ended.attempt) == (Verdict.retrying, Status.queued, 1)
    assert names(session, ended.dispatched) == ["slow"]
    printed = AttemptEnd(Status.failed, exit_code=1, error="timed out after 1s")  # the script's own words
    ended = end_attempt(session, says_so.id, printed)
    assert ended is not None and (ended.verdict, ended.status) == (Verdict.final, Status.failed)


def test_an_attempt_handed_back_runs_again_and_the_one_that_ends_leaves_what_it_made(
    session: Session,
) -> None:
    build_id, _ = new_build(session, [Planned("package"), Planned("ship", after=("package",))])
    package = job(session, build_id, "package")
    start_job(session, package.id, "w.1")
    back = AttemptEnd(Status.queued, error="handed back", stopped_by=StopReason.handed_back)
    handed = end_attempt(session, package.id, back)
    assert handed is not None and (handed.verdict, handed.status) == (Verdict.handed_back, Status.queued)
    assert names(session, handed.dispatched) == ["package"]

    start_job(session, package.id, "w.2")
    made = Made()
    ended = end_attempt(
        session, package.id, AttemptEnd(Status.success, 0, kept=[made], expire_in=60, image=made)
    )
    assert ended is not None
    assert (ended.verdict, ended.status, ended.attempt) == (Verdict.final, Status.success, 2)
    assert names(session, ended.dispatched) == ["ship"]
    row = job(session, build_id, "package")
    assert (row.image_tag, row.image_id, row.image_digest) == (made.tag, made.image_id, made.digest)
    assert [a.path for a in artifacts_of_build(session, build_id)] == ["dist/app.tar"]


def test_a_lost_job_is_retried_only_while_it_runs_and_an_internal_error_ends_it_whatever_its_policy(
    session: Session,
) -> None:
    lost, broken = two_jobs(session, Retry(max=2, when=["runner_failure"]), "lost", "broken")
    assert end_lost_job(session, lost.id, "the worker running it (w.9) was lost") is None  # not running
    start_job(session, lost.id, "w.9")
    start_job(session, broken.id, "w.1")
    ended = end_lost_job(session, lost.id, "the worker running it (w.9) was lost")
    assert ended is not None and (ended.verdict, ended.status) == (Verdict.retrying, Status.queued)

    internal = AttemptEnd(Status.error, error="internal error: KeyError: 'x'")
    ended = end_attempt(session, broken.id, internal, may_retry=False)
    assert ended is not None and (ended.verdict, ended.status) == (Verdict.final, Status.error)
    late = end_attempt(session, broken.id, AttemptEnd(Status.success, 0))  # another worker, too late
    assert late is not None and (late.verdict, late.status) == (Verdict.final, None)
    assert job(session, broken.build_id, "broken").status == Status.error
