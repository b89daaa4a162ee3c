"""pipelines.yml texts for the loader's tests, and the error loading one raises."""

from __future__ import annotations

import pytest

from ciserver.pipeline import PipelineError, load_pipeline
from tests.support.engine import BUSYBOX

JOB = "jobs:\n  a: {script: [x]}\n"
ONE_JOB = "image: x\njobs:\n  a:\n    script: [echo]\n"
# The end-to-end tests' plainest green pipeline: two busybox jobs, one stage after the other.
HELLO_THEN_PACKAGE = f"""\
image: {BUSYBOX}
stages: [test, build]
jobs:
  hello:
    stage: test
    script: [echo hello]
  package:
    stage: build
    script: [echo packaged]
"""
# How a deploying pipeline starts: the sample service's release image, its commit as VERSION.
PACKAGE_RELEASE = """\
stages: [build]
jobs:
  package:
    stage: build
    image_build: {context: ., build_args: {VERSION: "${CI_COMMIT_SHORT_SHA}"}}
"""


def error_of(text: str | bytes) -> PipelineError:
    with pytest.raises(PipelineError) as caught:
        load_pipeline(text)
    return caught.value


def assert_job_refused(extra: str, expected: str) -> None:
    """A file of one job with `extra` lines added to the job is refused with a message starting `expected`."""
    message = str(error_of(ONE_JOB + extra))
    assert message.startswith(expected), message
