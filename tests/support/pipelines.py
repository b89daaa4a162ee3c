"""pipelines.yml texts for the loader's tests, and the error loading one raises."""

from __future__ import annotations

import pytest

from ciserver.pipeline import PipelineError, load_pipeline

JOB = "jobs:\n  a: {script: [x]}\n"
ONE_JOB = "image: x\njobs:\n  a:\n    script: [echo]\n"


def error_of(text: str | bytes) -> PipelineError:
    with pytest.raises(PipelineError) as caught:
        load_pipeline(text)
    return caught.value


def assert_job_refused(extra: str, expected: str) -> None:
    """A file of one job with `extra` lines added to the job is refused with a message starting `expected`."""
    message = str(error_of(ONE_JOB + extra))
    assert message.startswith(expected), message
