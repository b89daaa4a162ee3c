"""The variables every job gets (CI_*, named as GitLab's predefined ones) and how `$NAME` in its
`image` is expanded: one definition for the worker that runs the job and the API that shows which
image it ran, so the two can never tell different stories.

What this expands is pusher-controlled text; it is only ever a string handed to the engine's API,
never a command line, and the executor still checks the expanded name where it is used (whose
project built the image).
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from ciserver.deploy.names import release_tag
from ciserver.store.models import Build, Job

_VARIABLE = re.compile(r"\$(?:\{([A-Za-z_][A-Za-z0-9_]*)\}|([A-Za-z_][A-Za-z0-9_]*))")


def release_image(build: Build, registry: str | None = None) -> str:
    """The tag of the build's release image: in the registry when one is set, so any engine pulls it."""
    return release_tag(build.project.name, build.sha, registry)


def ci_variables(build: Build, job: Job, registry: str | None = None) -> dict[str, str]:
    """What every job finds in its environment, named as GitLab's predefined variables are."""
    return {
        "CI": "true",
        "CI_COMMIT_SHA": build.sha,
        "CI_COMMIT_SHORT_SHA": build.sha[:8],
        "CI_COMMIT_REF": build.ref,
        "CI_COMMIT_BRANCH": build.branch or "",
        "CI_COMMIT_TAG": build.tag or "",
        "CI_BUILD_ID": str(build.id),
        "CI_PIPELINE_SOURCE": str(build.source),
        "CI_JOB_ID": str(job.id),
        "CI_JOB_NAME": job.name,
        "CI_JOB_STAGE": job.stage,
        "CI_JOB_ATTEMPT": str(job.attempt),
        "CI_PROJECT": build.project.name,
        "CI_RELEASE_IMAGE": release_image(build, registry),
    }


def expand(text: str, variables: Mapping[str, str]) -> str:
    """`$NAME` and `${NAME}` replaced from `variables`; unknown names are left as written."""
    return _VARIABLE.sub(lambda m: variables.get(m.group(1) or m.group(2), m.group(0)), text)


def job_variables(job: Job, registry: str | None = None) -> dict[str, str]:
    """A job's variables before its secrets: the file's `env` (and matrix values), over them those a
    manual run or a schedule gave, then the CI_* ones, which nothing overrides."""
    given = {str(k): str(v) for k, v in (job.build.variables or {}).items()}
    return {str(k): str(v) for k, v in job.env.items()} | given | ci_variables(job.build, job, registry)


def image_ran(job: Job, registry: str | None = None) -> str:
    """The image the job runs (or ran): its `image` with the job's variables expanded. Secrets are
    never expanded here, so a name made of one is shown as written and its value stays hidden."""
    return expand(job.image, job_variables(job, registry))
