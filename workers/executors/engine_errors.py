"""What the Docker Engine's failures become: the ExecutorError messages the docker modules share,
worded once, so a job, a build and a cleanup say the same thing about the same fault."""

from __future__ import annotations

from docker.errors import DockerException
from requests.exceptions import RequestException

from workers.executors.base import ExecutorError

# What the docker SDK raises when the engine cannot be reached: not every requests error is wrapped.
ENGINE_UNREACHABLE = (DockerException, RequestException)


def explain(exc: BaseException) -> str:
    """What the engine said (an APIError's explanation), else the error itself."""
    return str(getattr(exc, "explanation", None) or exc)


def engine_unreachable(exc: BaseException) -> ExecutorError:
    """The engine did not answer: the job ends in `error` (a retry on `runner_failure` may cure it)."""
    return ExecutorError(f"the Docker Engine is unreachable: {exc}")


def image_missing(reference: str, pull_error: BaseException | None = None) -> ExecutorError:
    """An image the engine lacks: not pulled (pulling is off), or its pull failed with `pull_error`."""
    if pull_error is None:
        return ExecutorError(f"image {reference!r} is not on this worker's Docker Engine")
    return ExecutorError(
        f"image {reference!r} is not on this worker's Docker Engine and could not be pulled: "
        f"{explain(pull_error)}"
    )
