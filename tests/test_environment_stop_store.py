"""Stopping an environment as the store decides it, on both databases: a stop is a deployment the deploy
worker carries out; once done the environment runs nothing, its address is free, it says who stopped
it, nothing follows it, and a promote starts it again as a first deployment. What cannot be stopped
is refused saying why."""

from __future__ import annotations

import pytest
from sqlalchemy.orm import Session

from ciserver.states import DeployAction, DeploymentStatus
from ciserver.store import deployments as store
from ciserver.store import environments, releases
from ciserver.store.deployments import DeployRefused, DeployTargetMissing
from ciserver.store.models import Project
from tests.support.store import green_build, new_project
from tests.test_deployment_store import deployed

PIPELINE = """\
image: busybox
jobs:
  package: {image_build: {context: .}}
environments:
  staging: {auto: true, listen: "127.0.0.1:9001"}
  qa: {auto: true, after: staging, listen: "127.0.0.1:9003"}
service: {port: 8000, health: /healthz}
"""
SCRIPT_PIPELINE = """\
image: busybox
jobs:
  unit: {script: ["true"]}
environments:
  cloud: {auto: true, script: ["deploy-tool"]}
"""


@pytest.fixture
def project(session: Session) -> Project:
    return new_project(session)


def running_staging(session: Session, project: Project) -> int:
    """A green build of main whose release staging runs; returns the build's id."""
    build = green_build(session, project, PIPELINE)
    [staging] = releases.deployments_for_green_build(session, build.id)
    assert store.claim(session, staging, "worker-1") is not None
    store.save_progress(session, staging, color="blue", address="127.0.0.1:32768", weight=100)
    assert len(store.finish(session, staging, DeploymentStatus.succeeded)) == 1  # qa follows staging
    return build.id


def test_a_stop_takes_the_environment_down_and_a_promote_starts_it_again(
    session: Session, project: Project
) -> None:
    build_id = running_staging(session, project)
    stop = releases.stop(session, project, "staging", "token:7 (ops)")
    assert (stop.action, stop.status) == (DeployAction.stop, DeploymentStatus.pending)
    first, stop = stop, releases.stop(session, project, "staging", "token:7 (ops)")  # asked twice
    assert (first.status, first.reason) == (DeploymentStatus.failed, f"superseded by deployment {stop.id}")
    # The rules changed since the release went out: a stop still takes down what runs.
    environments.protect(session, project, "staging", "ops", branches=["release/*"])
    claimed = store.claim(session, stop.id, "worker-1")
    assert claimed is not None and claimed.action == DeployAction.stop
    environments.protect(session, project, "staging", "ops", branches=["main"])
    with pytest.raises(DeployRefused, match=f"deployment {stop.id} of 'staging' is progressing"):
        releases.promote(session, project, "staging", build_id, "token:7 (ops)")
    assert store.finish(session, stop.id, DeploymentStatus.succeeded) == []  # nothing follows a stop

    row = environments.find(session, project.id, "staging")
    assert row is not None and (row.release_id, row.color, row.address, row.deployed_at) == (None,) * 4
    assert (
        store.stop_of(session, row) is not None
        and store.stop_of(session, row).triggered_by == "token:7 (ops)"
    )
    assert environments.listen_conflict(session, None, "127.0.0.1:9001") is None  # its address is free
    with pytest.raises(DeployRefused, match="runs nothing: it was never deployed, or is stopped"):
        releases.stop(session, project, "staging", "token:7 (ops)")

    again = releases.promote(session, project, "staging", build_id, "token:7 (ops)")
    started = store.claim(session, again.id, "worker-1")
    assert started is not None and (started.previous_color, started.previous_address) == (None, None)
    store.save_progress(session, again.id, color="green", address="127.0.0.1:32769", weight=100)
    store.finish(session, again.id, DeploymentStatus.succeeded)
    row = environments.find(session, project.id, "staging")
    assert row is not None and row.release_id is not None and store.stop_of(session, row) is None


def test_what_cannot_be_stopped_is_refused_saying_why(session: Session, project: Project) -> None:
    with pytest.raises(DeployTargetMissing, match="no environment 'staging'"):
        releases.stop(session, project, "staging", "ops")
    build = green_build(session, project, PIPELINE)
    [staging] = releases.deployments_for_green_build(session, build.id)
    with pytest.raises(DeployRefused, match="runs nothing"):  # declared: qa waits for staging
        releases.stop(session, project, "qa", "ops")
    assert store.claim(session, staging, "worker-1") is not None
    with pytest.raises(DeployRefused, match=f"deployment {staging} of 'staging' is progressing"):
        releases.stop(session, project, "staging", "ops")

    script = green_build(session, project, SCRIPT_PIPELINE)
    [cloud] = releases.deployments_for_green_build(session, script.id)
    deployed(session, cloud)
    with pytest.raises(DeployRefused, match="deploys with a script"):
        releases.stop(session, project, "cloud", "ops")
