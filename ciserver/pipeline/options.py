"""What a planned job asks of its worker beyond image and script, typed once for the planner, the
store and the worker: kept as JSON in the job's row, read back when a worker takes the job.

The JSON holds only the keys the job sets, each as its model dumps it, so that rows written by an
earlier version (builds queued before an upgrade) still read back and run.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field, ValidationError

from ciserver.pipeline.environments import EnvironmentName
from ciserver.pipeline.fields import EnvName, Loc, Network, Strict, User
from ciserver.pipeline.models import Artifacts, Cache, ImageBuild, Job, Resources, Retry, Service


class OptionsError(ValueError):
    """A job row whose options this version cannot read; the job ends in error with this message."""


class JobOptions(Strict):
    """A job's services, artifacts, cache, secrets, image build, limits, user, retry policy,
    environment and network, with the defaults of the keys it leaves out."""

    services: list[Service] = Field(default_factory=list)
    artifacts: Artifacts | None = None
    cache: Cache | None = None
    secrets: list[EnvName] = Field(default_factory=list)  # whose values the job gets, masked
    image_build: ImageBuild | None = None  # the job builds this image instead of running a script
    resources: Resources = Field(default_factory=Resources)  # unset limits: the server's
    user: User | None = None  # None: the server's job user
    retry: Retry | None = None  # None: no retry
    environment: EnvironmentName | None = None  # whose scoped secrets; the worker checks the ref may
    network: Network = "default"

    @classmethod
    def of(cls, job: Job) -> JobOptions:
        """What a job of the file asks for; the keys it leaves unset take the defaults here."""
        return cls(**{key: value for key in cls.model_fields if (value := getattr(job, key)) is not None})

    def stored(self) -> dict[str, Any]:
        """The JSON of the job's row: the keys that differ from their default, each dumped without
        its unset (None) fields, e.g. {"cache": {"key": "default", "paths": [".cache"]}}."""
        dumped = self.model_dump(mode="json", exclude_none=True)
        return {key: value for key, value in dumped.items() if value != _DEFAULTS.get(key)}

    @classmethod
    def from_stored(cls, stored: Any) -> JobOptions:
        """The options a job row holds; OptionsError names each key that does not read back."""
        try:
            return cls.model_validate(stored)
        except ValidationError as exc:
            problems = "; ".join(
                f"{_dotted(('options', *error['loc']))}: {error['msg']}"
                for error in exc.errors(include_url=False)
            )
            raise OptionsError(f"the job's stored options cannot be read: {problems}") from None


_DEFAULTS = JobOptions().model_dump(mode="json", exclude_none=True)


def _dotted(loc: Loc) -> str:
    """options.services[0].alias"""
    return "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in loc).lstrip(".")
