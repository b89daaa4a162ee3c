"""Releases and deployments in a real SQLite database: which builds become releases, which
environments deploy by themselves, and what promote, rollback, pause, resume and abort allow."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy.orm import Session

from ciserver.states import DeploymentStatus, Status
from ciserver.store import deployments as store
from ciserver.store import releases
from ciserver.store.models import Deployment, Project, utcnow
from tests.support.store import green_build, new_project

PIPELINE = """\
image: busybox
jobs:
  package: {image_build: {context: .}}
environments:
  staging: {auto: true, listen: "127.0.0.1:9001", branches: [main, "release/*"]}
  production: {after: staging, listen: "127.0.0.1:9002", strategy: {canary: {}}}
  qa: {auto: true, after: staging, listen: "127.0.0.1:9003", branches: ["release/*"]}
service: {port: 8000, health: /healthz}
"""


@pytest.fixture
def project(session: Session) -> Project:
    return new_project(session)


def green(session: Session, project: Project, branch: str = "main", status: Status = Status.success) -> int:
    return green_build(session, project, PIPELINE, branch=branch, status=status).id


def deployed(session: Session, deployment_id: int) -> None:
    """What a deploy worker does with a deployment that goes well."""
    assert store.claim(session, deployment_id, "worker-1") is not None
    store.save_progress(session, deployment_id, color="blue", address="127.0.0.1:32768", weight=100)
    store.finish(session, deployment_id, DeploymentStatus.succeeded)


def test_a_green_build_becomes_a_release_and_auto_environments_deploy_it(
    session: Session, project: Project
) -> None:
    build_id = green(session, project)
    started = releases.deployments_for_green_build(session, build_id)
    assert len(started) == 1
    deployment = session.get(Deployment, started[0])
    assert deployment is not None
    assert (deployment.environment.name, deployment.action, deployment.strategy) == (
        "staging",
        "auto",
        "blue_green",
    )
    assert deployment.release.image_id == "sha256:" + "1" * 64
    assert releases.deployments_for_green_build(session, build_id) == []  # once only
    # After staging succeeds, nothing follows automatically: production waits for a promote, and qa
    # (auto, after staging) takes only release/* branches.
    assert store.finish(session, started[0], DeploymentStatus.succeeded) == []


def test_a_failed_build_makes_no_release_and_one_no_environment_takes_deploys_nowhere_saying_why(
    session: Session, project: Project
) -> None:
    assert releases.deployments_for_green_build(session, green(session, project, status=Status.failed)) == []
    assert releases.list_releases(session, project.id) == []
    releases.deployments_for_green_build(session, green(session, project))  # main declares the environments
    feature = green(session, project, branch="feature")
    assert releases.deployments_for_green_build(session, feature) == []
    release = releases.list_releases(session, project.id)[0]
    assert release.build_id == feature
    assert release.refused == {
        "staging": "environment 'staging' takes branches [main, release/*] (its rules on the server); "
        "this release is of branch 'feature'",
        "production": "environment 'production' takes the default branch 'main' (its rules on the server); "
        "this release is of branch 'feature'",
        "qa": "environment 'qa' takes branches [release/*] (its rules on the server); "
        "this release is of branch 'feature'",
    }


def test_an_environment_with_auto_and_after_follows_once_its_predecessor_succeeded(
    session: Session, project: Project
) -> None:
    [declared] = releases.deployments_for_green_build(session, green(session, project))
    deployed(session, declared)
    [staging] = releases.deployments_for_green_build(session, green(session, project, branch="release/2"))
    assert store.claim(session, staging, "w") is not None
    [qa] = store.finish(session, staging, DeploymentStatus.succeeded)
    follower = session.get(Deployment, qa)
    assert follower is not None and follower.environment.name == "qa"
    assert follower.triggered_by == "auto: after staging"


def test_promote_checks_the_build_the_environment_and_its_after(session: Session, project: Project) -> None:
    build_id = green(session, project)
    [staging] = releases.deployments_for_green_build(session, build_id)
    with pytest.raises(store.DeployRefused, match="has not yet succeeded in 'staging'") as early:
        releases.promote(session, project, "production", build_id, "token:1 (ops)")
    assert type(early.value) is store.DeployRefused
    deployed(session, staging)
    deployment = releases.promote(session, project, "production", build_id, "token:1 (ops)")
    assert (deployment.action, deployment.strategy, deployment.triggered_by) == (
        "promote",
        "canary",
        "token:1 (ops)",
    )
    with pytest.raises(store.DeployRefused, match=r"deployment \d+ of 'production' is progressing") as busy:
        assert store.claim(session, deployment.id, "w") is not None
        releases.promote(session, project, "production", build_id, "token:1 (ops)")
    assert type(busy.value) is store.DeployRefused
    refusals = [
        (
            store.DeployTargetMissing,
            "has no build 999",
            lambda: releases.promote(session, project, "production", 999, "x"),
        ),
        (
            store.DeployTargetMissing,
            "'nowhere' is not in build",
            lambda: releases.promote(session, project, "nowhere", build_id, "x"),
        ),
        (
            store.DeployRefused,
            "takes branches \\[release/\\*\\]",
            lambda: releases.promote(session, project, "qa", build_id, "x"),
        ),
    ]
    for kind, message, action in refusals:
        with pytest.raises(store.DeployRefused, match=message) as refused:
            action()
        assert type(refused.value) is kind
    failed = green(session, project, status=Status.failed)
    with pytest.raises(store.DeployRefused, match="is failed: only a succeeded build"):
        releases.promote(session, project, "staging", failed, "x")


def test_rollback_deploys_the_release_before_the_current_one(session: Session, project: Project) -> None:
    with pytest.raises(store.DeployRefused, match="no environment 'staging'"):
        releases.rollback(session, project, "staging", "x")
    first = green(session, project)
    [one] = releases.deployments_for_green_build(session, first)
    deployed(session, one)
    with pytest.raises(store.DeployRefused, match="no earlier release"):
        releases.rollback(session, project, "staging", "x")
    [two] = releases.deployments_for_green_build(session, green(session, project))
    deployed(session, two)
    back = releases.rollback(session, project, "staging", "token:2 (ops)")
    assert back.action == "rollback" and back.release.build_id == first


def test_a_newer_pending_deployment_supersedes_an_older_one(session: Session, project: Project) -> None:
    [one] = releases.deployments_for_green_build(session, green(session, project))
    assert store.claim(session, one, "w") is not None
    [two] = releases.deployments_for_green_build(session, green(session, project))
    [three] = releases.deployments_for_green_build(session, green(session, project))
    assert store.claim(session, three, "w2") is None  # waits for the one under way
    older = session.get(Deployment, two)
    assert older is not None and (older.status, older.reason) == (
        "failed",
        f"superseded by deployment {three}",
    )
    assert store.finish(session, one, DeploymentStatus.succeeded) == [three]


def test_pause_resume_and_abort_follow_the_deployment_state(session: Session, project: Project) -> None:
    [one] = releases.deployments_for_green_build(session, green(session, project))
    deployment = session.get(Deployment, one)
    assert deployment is not None
    with pytest.raises(store.DeployRefused, match="is pending: it cannot be paused now"):
        store.request_control(session, deployment, "pause", "x")
    assert store.claim(session, one, "w") is not None
    assert store.request_control(session, deployment, "pause", "ops") is False  # the worker acts on it
    assert store.control_of(session, one) == ("pause", "ops")
    store.pause(session, one)
    assert deployment.status == "paused" and deployment.worker is None
    assert store.request_control(session, deployment, "resume", "ops") is True  # back to a worker
    assert store.claim(session, one, "w2") is not None
    assert store.claim(session, one, "w3") is None  # one worker at a time
    assert store.request_control(session, deployment, "abort", "ops") is False
    assert store.control_of(session, one) == ("abort", "ops")
    store.finish(session, one, DeploymentStatus.rolled_back, "aborted by ops")
    with pytest.raises(store.DeployRefused, match="is rolled_back: it cannot be resumed now"):
        store.request_control(session, deployment, "resume", "ops")


def test_a_previous_color_is_retired_only_when_nothing_may_use_it(session: Session, project: Project) -> None:
    [one] = releases.deployments_for_green_build(session, green(session, project))
    deployed(session, one)  # staging serves blue
    assert not store.retirable(session, "octo/app", "staging", "blue")
    assert store.retirable(session, "octo/app", "staging", "green")
    [two] = releases.deployments_for_green_build(session, green(session, project))
    assert not store.retirable(session, "octo/app", "staging", "green")  # deployment two may reuse it
    store.finish(session, two, DeploymentStatus.failed, "no")
    assert store.retirable(session, "octo/app", "staging", "green")
    assert not store.retirable(session, "octo/app", "nowhere", "green")


def test_a_deployment_of_a_lost_worker_is_handed_back_for_the_outbox_and_resumed_elsewhere(
    session: Session, project: Project
) -> None:
    [one] = releases.deployments_for_green_build(session, green(session, project))
    assert store.claim(session, one, "w-lost") is not None
    assert store.hand_back_deployments_of(session, alive={"w-lost"}) == []
    assert store.hand_back_deployments_of(session, alive={"w-other"}) == [one]
    session.expire_all()
    deployment = session.get(Deployment, one)
    assert deployment is not None and (deployment.status, deployment.worker) == ("progressing", None)
    assert store.lost_deployments(session, before=utcnow() + timedelta(seconds=1)) == [one]
    assert store.claim(session, one, "w-other") is not None  # goes on from its recorded step
