"""Commit statuses reach the forge as its API documents them, once per state that still matters, and
a forge that fails, refuses or hangs is retried, given up with the reason shown, or waited out without
touching the build: the reporter's passes against a real database and a fake forge API on loopback."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from ciserver.app import create_app
from ciserver.config import Settings
from ciserver.crypto import load_fernet
from ciserver.event_bus import install_publisher
from ciserver.states import Status, When
from ciserver.statuses import StatusThread, refresh_changed, send_due
from ciserver.store.db import session_scope
from ciserver.store.events import record_build, record_job
from ciserver.store.models import Build, Job, Role, utcnow
from ciserver.store.projects import add_project, get_project, update_project
from ciserver.store.statuses import claim, due_status_ids
from tests.support.fake_forge import Answer, FakeForge, fake_forge
from tests.support.store import bearer

SHA = "ab" * 20


@pytest.fixture
def forge() -> Iterator[FakeForge]:
    with fake_forge() as forge:
        yield forge


@pytest.fixture
def settings(tmp_path: Path, database_url: str) -> Settings:
    """On SQLite and on PostgreSQL (the conftest's `database_url`), in the data dir `tmp_path/data`."""
    (tmp_path / "data").mkdir(exist_ok=True)
    return Settings(
        data_dir=tmp_path / "data",
        database_url=database_url,
        public_url="https://ci.example/",
        status_backoff=0.05,
        status_timeout=1.0,
        status_attempts=4,
    )


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=httpx.Timeout(1.0)) as client:
        yield client


def register(settings: Settings, forge: FakeForge, name: str = "octo/app", kind: str = "github") -> None:
    with session_scope(settings.db_url) as session:
        fernet = load_fernet(settings)
        project = add_project(
            session, name=name, forge=kind, repo_url="https://x.test/r.git", secret="s" * 16, fernet=fernet
        )
        update_project(session, project, fernet, forge_api_url=forge.url + "/api", forge_token="tok-123")


def new_build(settings: Settings, jobs: list[dict[str, object]], name: str = "octo/app") -> int:
    """A running build with these jobs, its events recorded as the store records them."""
    with session_scope(settings.db_url) as session:
        project = get_project(session, name)
        assert project is not None
        build = Build(
            project_id=project.id, ref="refs/heads/main", branch="main", sha=SHA, status=Status.running,
            started_at=utcnow(),
        )  # fmt: skip
        session.add(build)
        session.flush()
        for position, fields in enumerate(jobs):
            session.add(
                Job(
                    build_id=build.id, position=position, stage="test", image="busybox", script=["true"],
                    env={}, timeout=60, **{"after": [], **fields},
                )
            )  # fmt: skip
        session.flush()
        record_build(session, build.id)
        for job in build.jobs:
            record_job(session, job.id)
        return build.id


def change(settings: Settings, build_id: int, build: Status | None = None, **jobs: Status) -> None:
    """Move the build and the named jobs to these states, with their events."""
    with session_scope(settings.db_url) as session:
        row = session.get_one(Build, build_id)
        if build is not None:
            row.status = build
            row.finished_at = utcnow() if build.final else None
        for job in row.jobs:
            if job.name in jobs:
                job.status = jobs[job.name]
                job.exit_code = 1 if job.status == Status.failed else job.exit_code
        session.flush()
        record_build(session, build_id)
        for job in row.jobs:
            if job.name in jobs:
                record_job(session, job.id)


def report(settings: Settings, client: httpx.Client) -> int:
    refresh_changed(settings)
    return send_due(settings, client)


def shown(settings: Settings, build_id: int) -> dict[str, dict[str, object]]:
    """The build's statuses as GET /api/v1/builds/{id} shows them, by context."""
    with TestClient(create_app(settings, outbox=False)) as http:
        answer = http.get(f"/api/v1/builds/{build_id}", headers=bearer(settings, Role.viewer))
        assert answer.status_code == 200, answer.text
        return {status["context"]: status for status in answer.json()["statuses"]}


# --- the request each forge documents ------------------------------------------------------------


def test_github_gets_the_pipeline_and_each_job_with_bearer_auth_and_the_documented_body(
    settings: Settings, forge: FakeForge, client: httpx.Client
) -> None:
    register(settings, forge)
    build_id = new_build(
        settings, [{"name": "unit", "status": Status.running}, {"name": "lint", "after": ["unit"]}]
    )
    assert report(settings, client) == 3
    by_context = {call.body["context"]: call for call in forge.calls}
    assert set(by_context) == {"ciserver", "ciserver/unit", "ciserver/lint"}
    pipeline = by_context["ciserver"]
    assert pipeline.path == f"/api/repos/octo/app/statuses/{SHA}"
    assert pipeline.headers["Authorization"] == "Bearer tok-123"
    assert pipeline.headers["Accept"] == "application/vnd.github+json"
    assert pipeline.body == {
        "state": "pending",
        "target_url": f"https://ci.example/builds/{build_id}",
        "description": "running: unit (0 of 2 jobs done)",
        "context": "ciserver",
    }
    assert by_context["ciserver/lint"].body["description"] == "waiting for unit"
    assert all(status["sent"] for status in shown(settings, build_id).values())


def test_gitlab_gets_one_status_named_for_the_pipeline_with_its_ref_and_private_token(
    settings: Settings, forge: FakeForge, client: httpx.Client
) -> None:
    register(settings, forge, "group/sub/app", "gitlab")
    build_id = new_build(settings, [{"name": "unit", "status": Status.running}], name="group/sub/app")
    assert report(settings, client) == 1
    [call] = forge.calls
    assert call.path == f"/api/projects/group%2Fsub%2Fapp/statuses/{SHA}"
    assert call.headers["PRIVATE-TOKEN"] == "tok-123"
    assert "Authorization" not in call.headers
    assert call.body == {
        "state": "running",
        "ref": "main",
        "name": "ciserver",
        "target_url": f"https://ci.example/builds/{build_id}",
        "description": "running: unit (0 of 1 jobs done)",
    }


def test_gitea_gets_the_pipeline_and_each_job_with_its_token_header(
    settings: Settings, forge: FakeForge, client: httpx.Client
) -> None:
    register(settings, forge, kind="gitea")
    new_build(settings, [{"name": "unit"}])
    report(settings, client)
    assert {call.body["context"] for call in forge.calls} == {"ciserver", "ciserver/unit"}
    assert {call.headers["Authorization"] for call in forge.calls} == {"token tok-123"}
    assert {call.path for call in forge.calls} == {f"/api/repos/octo/app/statuses/{SHA}"}


def test_a_canceled_build_is_canceled_on_gitlab_and_an_error_saying_so_on_github(
    settings: Settings, forge: FakeForge, client: httpx.Client
) -> None:
    register(settings, forge)
    register(settings, forge, "group/app", "gitlab")
    for name in ("octo/app", "group/app"):
        build_id = new_build(settings, [{"name": "unit"}], name=name)
        change(settings, build_id, Status.canceled, unit=Status.canceled)
    report(settings, client)
    github = next(c.body for c in forge.calls if c.body.get("context") == "ciserver")
    gitlab = next(c.body for c in forge.calls if c.body.get("name") == "ciserver")
    assert (github["state"], github["description"]) == ("error", "canceled")
    assert gitlab["state"] == "canceled"


# --- what the descriptions say -------------------------------------------------------------------


def test_a_failure_names_the_failing_job_and_an_allowed_failure_stays_green(
    settings: Settings, forge: FakeForge, client: httpx.Client
) -> None:
    register(settings, forge)
    build_id = new_build(settings, [{"name": "unit"}, {"name": "flaky", "allow_failure": True}])
    change(settings, build_id, Status.failed, unit=Status.failed, flaky=Status.failed)
    report(settings, client)
    bodies = {call.body["context"]: call.body for call in forge.calls}
    assert (bodies["ciserver"]["state"], bodies["ciserver"]["description"]) == (
        "failure",
        "failed: unit failed",
    )
    assert bodies["ciserver/unit"]["description"] == "failed (exit code 1)"
    assert (bodies["ciserver/flaky"]["state"], bodies["ciserver/flaky"]["description"]) == (
        "success",
        "failed (exit code 1), and is allowed to",
    )


def test_a_description_is_cut_to_githubs_140_characters_and_a_manual_job_says_it_waits(
    settings: Settings, forge: FakeForge, client: httpx.Client
) -> None:
    register(settings, forge)
    build_id = new_build(settings, [{"name": "deploy", "when": When.manual}, {"name": "unit"}])
    with session_scope(settings.db_url) as session:
        job = session.get_one(Build, build_id).jobs[1]
        job.status, job.error = Status.error, "the image <x> is missing; " * 20
        session.flush()
        record_job(session, job.id)
    change(settings, build_id, deploy=Status.skipped)
    report(settings, client)
    bodies = {call.body["context"]: call.body for call in forge.calls}
    assert len(bodies["ciserver/unit"]["description"]) == 140
    assert bodies["ciserver/unit"]["description"].startswith("error: the image <x> is missing;")
    assert bodies["ciserver/unit"]["description"].endswith("\u2026")
    assert bodies["ciserver/deploy"]["description"] == "manual: waiting for someone to play it"


# --- the outbox ----------------------------------------------------------------------------------


def test_states_superseded_before_they_were_sent_are_never_sent(
    settings: Settings, forge: FakeForge, client: httpx.Client
) -> None:
    register(settings, forge)
    build_id = new_build(settings, [{"name": "unit"}])
    change(settings, build_id, unit=Status.running)
    change(settings, build_id, Status.success, unit=Status.success)
    report(settings, client)
    assert forge.states("ciserver") == ["success"]
    assert forge.states("ciserver/unit") == ["success"]
    assert report(settings, client) == 0  # nothing changed, nothing sent again


def test_a_5xx_is_retried_after_a_backoff_and_then_delivered(
    settings: Settings, forge: FakeForge, client: httpx.Client
) -> None:
    register(settings, forge, "group/app", "gitlab")
    build_id = new_build(settings, [{"name": "unit"}], name="group/app")
    forge.script = [Answer(502, '{"message": "bad gateway"}')]
    assert report(settings, client) == 0
    failed = shown(settings, build_id)["ciserver"]
    assert (failed["sent"], failed["attempts"]) == (False, 1)
    assert "answered 502" in str(failed["error"])
    time.sleep(0.1)  # the first backoff: 0.05 s
    assert report(settings, client) == 1
    assert forge.states("ciserver") == ["running", "running"]
    delivered = shown(settings, build_id)["ciserver"]
    assert (delivered["sent"], delivered["error"], delivered["reported_state"]) == (True, None, "running")


def test_a_401_is_given_up_at_once_with_the_forges_answer_shown_on_the_build(
    settings: Settings, forge: FakeForge, client: httpx.Client
) -> None:
    register(settings, forge, "group/app", "gitlab")
    build_id = new_build(settings, [{"name": "unit"}], name="group/app")
    forge.default = Answer(401, '{"message": "401 Unauthorized"}')
    report(settings, client)
    time.sleep(0.1)
    report(settings, client)
    assert len(forge.calls) == 1
    status = shown(settings, build_id)["ciserver"]
    assert status["sent"] is False
    assert str(status["error"]).startswith(f"gave up: POST {forge.url}/api/projects/group%2Fapp/statuses/")
    assert 'answered 401: {"message": "401 Unauthorized"}' in str(status["error"])
    assert "tok-123" not in str(status)

    forge.default = Answer()  # the token was fixed: the next state is sent
    change(settings, build_id, Status.success, unit=Status.success)
    report(settings, client)
    assert forge.states("ciserver") == ["running", "success"]


def test_a_forge_that_keeps_failing_is_given_up_after_the_set_number_of_attempts(
    settings: Settings, forge: FakeForge, client: httpx.Client
) -> None:
    register(settings, forge, "group/app", "gitlab")
    build_id = new_build(settings, [], name="group/app")
    forge.default = Answer(503)
    deadline = time.monotonic() + 20  # the backoffs of four attempts take 0.35 s
    while not str(shown(settings, build_id).get("ciserver", {}).get("error")).startswith("gave up") and (
        time.monotonic() < deadline
    ):
        report(settings, client)
        time.sleep(0.05)
    time.sleep(0.5)  # longer than the next backoff would be
    report(settings, client)
    assert len(forge.calls) == settings.status_attempts
    status = shown(settings, build_id)["ciserver"]
    assert (status["attempts"], str(status["error"])[:9]) == (settings.status_attempts, "gave up: ")


def test_gitlab_refusing_a_state_it_already_shows_counts_as_delivered(
    settings: Settings, forge: FakeForge, client: httpx.Client
) -> None:
    register(settings, forge, "group/app", "gitlab")
    build_id = new_build(settings, [], name="group/app")
    forge.script = [Answer(400, '{"message": "Cannot transition status via :run from :running"}')]
    assert report(settings, client) == 1
    assert shown(settings, build_id)["ciserver"]["sent"] is True


def test_a_forge_that_hangs_costs_one_timeout_per_pass_and_leaves_the_rest_for_later(
    settings: Settings, forge: FakeForge, client: httpx.Client
) -> None:
    register(settings, forge)
    new_build(settings, [{"name": f"job{n}"} for n in range(5)])
    forge.default = Answer(delay=3)
    started = time.monotonic()
    assert report(settings, client) == 0
    assert time.monotonic() - started < 4  # one 1 s timeout, not six
    assert len(forge.calls) == 1
    forge.default = Answer()
    time.sleep(0.1)
    deadline = time.monotonic() + 5
    while report(settings, client) < 5 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert {c.body["context"] for c in forge.calls} >= {"ciserver", *(f"ciserver/job{n}" for n in range(5))}


def test_one_process_claims_a_status_and_another_leaves_it_alone(
    settings: Settings, forge: FakeForge
) -> None:
    register(settings, forge)
    new_build(settings, [])
    refresh_changed(settings)
    fernet = load_fernet(settings)
    with session_scope(settings.db_url) as session:
        [status_id] = due_status_ids(session, utcnow())
        first = claim(session, status_id, utcnow(), timedelta(seconds=30), fernet)
    with session_scope(settings.db_url) as session:
        second = claim(session, status_id, utcnow(), timedelta(seconds=30), fernet)
        assert due_status_ids(session, utcnow()) == []
    assert first is not None and first.token == "tok-123"
    assert second is None


def test_a_project_without_a_forge_token_reports_nothing(
    settings: Settings, forge: FakeForge, client: httpx.Client
) -> None:
    register(settings, forge)
    with session_scope(settings.db_url) as session:
        project = get_project(session, "octo/app")
        assert project is not None
        update_project(session, project, load_fernet(settings), forge_token=None)
    build_id = new_build(settings, [{"name": "unit"}])
    assert report(settings, client) == 0
    assert forge.calls == []
    assert shown(settings, build_id) == {}


def test_a_reporter_started_after_the_changes_reports_them(settings: Settings, forge: FakeForge) -> None:
    register(settings, forge)
    build_id = new_build(settings, [{"name": "unit"}])
    change(settings, build_id, Status.success, unit=Status.success)
    reporter = StatusThread(settings.model_copy(update={"status_interval": 0.05}))
    reporter.start()
    try:
        forge.wait_for(lambda calls: len(calls) == 2, timeout=10)
    finally:
        reporter.stopped.set()
        reporter.join(5)
    assert forge.states("ciserver") == ["success"]


def test_the_reporter_wakes_on_a_commit_long_before_its_interval(
    settings: Settings, forge: FakeForge, redis_url: str
) -> None:
    install_publisher(redis_url)  # as the API process does at start
    register(settings, forge)
    reporter = StatusThread(settings.model_copy(update={"status_interval": 60.0, "redis_url": redis_url}))
    reporter.start()
    try:
        time.sleep(0.5)  # subscribed, and its first wait begun
        started = time.monotonic()
        new_build(settings, [])
        forge.wait_for(lambda calls: len(calls) == 1, timeout=10)
        assert time.monotonic() - started < 5
    finally:
        reporter.stopped.set()


def test_builds_that_changed_before_the_upgrade_to_0004_are_not_reported_after_it(
    settings: Settings, forge: FakeForge, client: httpx.Client
) -> None:
    from alembic import command
    from sqlalchemy import create_engine, text

    from ciserver.store.schema import HEAD, alembic_config

    engine = create_engine(settings.db_url)
    with engine.begin() as connection:
        command.upgrade(alembic_config(connection), "0003")
        connection.execute(
            text(
                "INSERT INTO projects (name, forge, repo_url, secret, created_at)"
                " VALUES ('octo/app', 'github', 'https://x.test/r.git', 's', '2026-12-01')"
            )
        )
        connection.execute(
            text(
                "INSERT INTO builds (project_id, ref, branch, sha, message, author, status, created_at)"
                f" SELECT id, 'refs/heads/main', 'main', '{SHA}', '', '', 'success', '2026-12-01'"
                " FROM projects"
            )
        )
        connection.execute(
            text(
                "INSERT INTO events (project_id, at, kind, subject_id, status, data)"
                " SELECT project_id, '2026-12-01', 'build', id, 'success', '{}' FROM builds"
            )
        )
    with engine.begin() as connection:
        command.upgrade(alembic_config(connection), HEAD)
    engine.dispose()
    with session_scope(settings.db_url) as session:
        project = get_project(session, "octo/app")
        assert project is not None
        update_project(session, project, load_fernet(settings), forge_api_url=forge.url, forge_token="t")
    assert report(settings, client) == 0
    new_build(settings, [])  # a change after it is
    assert report(settings, client) == 1
    assert [call.path for call in forge.calls] == [f"/repos/octo/app/statuses/{SHA}"]


def test_the_api_process_runs_the_reporter(settings: Settings, forge: FakeForge) -> None:
    register(settings, forge)
    with TestClient(create_app(settings.model_copy(update={"status_interval": 0.1}))):
        new_build(settings, [])
        forge.wait_for(lambda calls: len(calls) == 1, timeout=10)
