"""Script deploys, for teams that deploy elsewhere (Kubernetes, a PaaS): the environment's `script`
runs in a container at each step of its strategy, told what to do by DEPLOY_ENV, DEPLOY_IMAGE,
DEPLOY_WEIGHT (percent of traffic for the new version) and DEPLOY_STEP (1, 2, ...).

ciserver routes no traffic here and cannot analyse it: a step succeeds when the script exits 0,
and a canary's interval is waited between steps (pause and abort are honoured while waiting).
A step that runs past the environment's `timeout` is stopped and fails the deployment, and only the
end of a step's output is kept, masked as it streams: a script may print or hang without end.
"""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Iterable, Mapping
from typing import Any

from ciserver.deploy.rollout import Journal, Outcome, RolloutStatus, now_text
from ciserver.masking import Masker
from ciserver.pipeline import Environment, Resources
from ciserver.pipeline.environments import DEFAULT_DEPLOY_TIMEOUT
from ciserver.states import Control
from ciserver.store.deployments import Claimed
from ciserver.units import format_duration
from workers.context import WorkerContext
from workers.executors.base import JobExit, JobSpec
from workers.jobspec import limits_for

OUTPUT_KEPT = 4000  # characters of a step's output kept in its record


def run_script_deploy(
    ctx: WorkerContext,
    claimed: Claimed,
    environment: Environment,
    variables: Mapping[str, str],
    secrets: Mapping[str, str],
    journal: Journal,
) -> Outcome:
    canary = environment.strategy.canary
    steps = canary.steps if canary else [100]
    image = environment.image or claimed.config.image
    assert image is not None  # the pipeline loader requires one
    workspace = ctx.settings.workspaces_dir / f"deploy-{claimed.id}"
    # Checked against the server's maximum when the build was planned; an older release's is capped.
    timeout = min(environment.timeout or DEFAULT_DEPLOY_TIMEOUT, ctx.settings.job_timeout_max)
    workspace.mkdir(parents=True, exist_ok=True)
    try:
        for index in range(claimed.step, len(steps)):
            if index > claimed.step and canary is not None:
                stopped = _wait(journal, canary.interval)
                if stopped is not None:
                    return stopped
            weight = steps[index]
            env = {
                **variables,
                **secrets,
                "DEPLOY_ENV": claimed.environment,
                "DEPLOY_IMAGE": claimed.image_tag or claimed.image or "",
                "DEPLOY_WEIGHT": str(weight),
                "DEPLOY_STEP": str(index + 1),
            }
            spec = JobSpec(
                job_id=claimed.id,
                name=f"deploy {claimed.environment} step {index + 1}",
                image=image,
                script=tuple(environment.script or ()),
                env=env,
                workspace=workspace,
                labels={
                    "ciserver.project": claimed.project,  # its image may be no other project's
                    "ciserver.data_dir": str(ctx.settings.data_dir),
                    "ciserver.worker": ctx.worker_name,
                    "ciserver.deployment": str(claimed.id),
                },
                limits=limits_for(Resources(), ctx.settings),
                container=f"ciserver-deploy-{claimed.id}-{index + 1}",
            )
            entry: dict[str, Any] = {"step": index + 1, "weight": weight, "started_at": now_text()}
            output = _OutputTail(secrets.values())
            exited = _run_step(ctx, spec, output, timeout)
            entry.update(exit_code=exited.exit_code, output=output.text(), finished_at=now_text())
            journal.add_step(entry)
            journal.save(step=index + 1, weight=weight)
            if exited.stopped:
                return Outcome(
                    RolloutStatus.failed,
                    f"the deploy script timed out after {format_duration(timeout)} at step {index + 1}",
                )
            if exited.exit_code != 0:
                return Outcome(
                    RolloutStatus.failed, f"the deploy script exited {exited.exit_code} at step {index + 1}"
                )
        return Outcome(RolloutStatus.succeeded)
    finally:
        shutil.rmtree(workspace, ignore_errors=True)


def _run_step(ctx: WorkerContext, spec: JobSpec, output: _OutputTail, timeout: int) -> JobExit:
    """The step's end; `stopped` when its timeout ended it."""
    stop = threading.Event()
    timer = threading.Timer(timeout, stop.set)
    timer.start()
    try:
        return ctx.executor.run(spec, output.write, stop)
    finally:
        timer.cancel()


class _OutputTail:
    """The last OUTPUT_KEPT characters of a step's output, masked as it streams, in bounded memory."""

    def __init__(self, secrets: Iterable[str]) -> None:
        self._masker = Masker(secrets)
        self._kept = bytearray()

    def write(self, chunk: bytes) -> None:
        self._kept += self._masker.feed(chunk)
        # 4 bytes per character at most, so the last OUTPUT_KEPT characters are always there.
        del self._kept[: -4 * OUTPUT_KEPT]

    def text(self) -> str:
        self._kept += self._masker.flush()
        return self._kept.decode(errors="replace")[-OUTPUT_KEPT:]


def _wait(journal: Journal, seconds: float) -> Outcome | None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        action, by = journal.control()
        if action == Control.pause:
            return Outcome(RolloutStatus.paused, f"paused by {by}")
        if action == Control.abort:
            return Outcome(RolloutStatus.failed, f"aborted by {by}")
        time.sleep(min(1.0, max(0.0, deadline - time.monotonic())))
    return None
