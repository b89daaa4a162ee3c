"""Script deploys, for teams that deploy elsewhere (Kubernetes, a PaaS): the environment's `script`
runs in a container at each step of its strategy, told what to do by DEPLOY_ENV, DEPLOY_IMAGE,
DEPLOY_WEIGHT (percent of traffic for the new version) and DEPLOY_STEP (1, 2, ...).

ciserver routes no traffic here and cannot analyse it: a step succeeds when the script exits 0,
and a canary's interval is waited between steps (pause and abort are honoured while waiting).
"""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Mapping
from typing import Any

from ciserver.deploy.rollout import Journal, Outcome, now_text
from ciserver.masking import mask_text
from ciserver.pipeline import Environment
from ciserver.store.deployments import Claimed
from workers.context import WorkerContext
from workers.executors.base import JobSpec
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
                    "ciserver.data_dir": str(ctx.settings.data_dir),
                    "ciserver.worker": ctx.worker_name,
                    "ciserver.deployment": str(claimed.id),
                },
                limits=limits_for({}, ctx.settings),
                container=f"ciserver-deploy-{claimed.id}-{index + 1}",
            )
            entry: dict[str, Any] = {"step": index + 1, "weight": weight, "started_at": now_text()}
            output = bytearray()
            exit_code = ctx.executor.run(spec, output.extend, threading.Event())
            text = mask_text(output.decode(errors="replace"), list(secrets.values()))
            entry.update(exit_code=exit_code, output=text[-OUTPUT_KEPT:], finished_at=now_text())
            journal.add_step(entry)
            journal.save(step=index + 1, weight=weight)
            if exit_code != 0:
                return Outcome("failed", f"the deploy script exited {exit_code} at step {index + 1}")
        return Outcome("succeeded")
    finally:
        shutil.rmtree(workspace, ignore_errors=True)


def _wait(journal: Journal, seconds: float) -> Outcome | None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        action, by = journal.control()
        if action == "pause":
            return Outcome("paused", f"paused by {by}")
        if action == "abort":
            return Outcome("failed", f"aborted by {by}")
        time.sleep(min(1.0, max(0.0, deadline - time.monotonic())))
    return None
