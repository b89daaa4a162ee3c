"""The states builds, jobs and deployments go through, and why a job or a deployment stops. Pure
values: the store keeps them as their strings, and the workers and the deployment strategies use
them without the database."""

from __future__ import annotations

import enum


class Status(enum.StrEnum):
    """States of builds and jobs; the last five are final."""

    queued = "queued"
    running = "running"
    success = "success"
    failed = "failed"
    error = "error"
    canceled = "canceled"
    skipped = "skipped"

    @property
    def final(self) -> bool:
        return self not in (Status.queued, Status.running)


class BuildSource(enum.StrEnum):
    """What started a build: jobs see it as CI_PIPELINE_SOURCE (the names Woodpecker and GitHub use;
    GitLab says merge_request_event and web where these say pull_request and manual)."""

    push = "push"
    pull_request = "pull_request"
    manual = "manual"
    schedule = "schedule"


class DeploymentStatus(enum.StrEnum):
    """States of a deployment; the last three are final."""

    pending = "pending"
    progressing = "progressing"
    paused = "paused"
    succeeded = "succeeded"
    failed = "failed"
    rolled_back = "rolled_back"

    @property
    def final(self) -> bool:
        return self in (DeploymentStatus.succeeded, DeploymentStatus.failed, DeploymentStatus.rolled_back)


class When(enum.StrEnum):
    """When a job runs once the jobs before it are final (pipelines.yml's `when`)."""

    on_success = "on_success"
    on_failure = "on_failure"
    always = "always"
    manual = "manual"  # skipped until someone plays it; then on_success


class StopReason(enum.StrEnum):
    """Why a job was stopped before it ended by itself: its end's status and error, and whether its
    retry policy counts it a timeout, go by it."""

    timeout = "timeout"
    canceled = "canceled"
    handed_back = "handed_back"  # its worker was told to stop: the job goes back to the queue


class DeployAction(enum.StrEnum):
    """What started a deployment."""

    auto = "auto"
    promote = "promote"
    rollback = "rollback"
    stop = "stop"  # ops took the environment down: its containers and route removed


class Control(enum.StrEnum):
    """What a deployment under way is asked between two checks: an operator's pause or abort (kept on
    the deployment), or hand back, its worker's own when it stops (never kept: another worker goes on
    from the recorded step)."""

    pause = "pause"
    abort = "abort"
    hand_back = "hand_back"
