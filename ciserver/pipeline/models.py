"""The pipeline file's shape as pydantic models: every key, its type and its default."""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator, model_validator

_DURATION = re.compile(r"^(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$")
_NAME = re.compile(r"^[^\x00-\x1f\x7f]{1,100}$")
_IMAGE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/:@-]{0,254}$")


def parse_duration(value: object) -> int:
    """Seconds from `90`, "90s", "10m", "1h30m" or "2h"."""
    if isinstance(value, bool):
        raise ValueError("must be a duration such as 90s, 10m or 1h30m")
    if isinstance(value, int):
        seconds = value
    elif isinstance(value, str) and value.strip().isdigit():
        seconds = int(value.strip())
    elif isinstance(value, str) and (match := _DURATION.match(value.strip())) and any(match.groups()):
        hours, minutes, secs = (int(g or 0) for g in match.groups())
        seconds = hours * 3600 + minutes * 60 + secs
    else:
        raise ValueError(f"invalid duration {value!r} (use 90s, 10m, 1h30m or seconds)")
    if seconds <= 0:
        raise ValueError("must be longer than 0 seconds")
    return seconds


def _env_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float | str):
        return str(value)
    raise ValueError("environment values must be strings, numbers or booleans")


def _one_or_many(value: object) -> object:
    return [value] if isinstance(value, str) else value


Duration = Annotated[int, BeforeValidator(parse_duration)]
EnvValue = Annotated[str, BeforeValidator(_env_value)]
Env = dict[str, EnvValue]
Lines = Annotated[list[str], BeforeValidator(_one_or_many)]


def check_image(image: str | None) -> str | None:
    # An image name becomes an argument to the engine: nothing that reads as an option or spaces.
    if image is not None and not _IMAGE.match(image):
        raise ValueError(f"{image!r} is not an image name (like ciserver-test/busybox or registry/app:1.2)")
    return image


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PushFilter(Strict):
    branches: Lines | None = None
    tags: Lines | None = None
    paths: Lines | None = None
    paths_ignore: Lines | None = None


class Triggers(Strict):
    push: PushFilter | None = None


class JobConfig(Strict):
    stage: str | None = None
    image: str | None = None
    script: Lines = Field(min_length=1)
    env: Env = Field(default_factory=dict)
    timeout: Duration | None = None

    _image = field_validator("image")(check_image)


class Pipeline(Strict):
    on: Triggers | None = None
    image: str | None = None
    env: Env = Field(default_factory=dict)
    stages: Lines = Field(default_factory=lambda: ["test"], min_length=1)
    jobs: dict[str, JobConfig] = Field(min_length=1)

    _image = field_validator("image")(check_image)

    @field_validator("stages")
    @classmethod
    def _unique_stages(cls, stages: list[str]) -> list[str]:
        for stage in stages:
            if not _NAME.match(stage):
                raise ValueError(f"stage name {stage!r} must be 1 to 100 printable characters")
        if len(set(stages)) != len(stages):
            raise ValueError("stage names must be unique")
        return stages

    @field_validator("jobs")
    @classmethod
    def _job_names(cls, jobs: dict[str, JobConfig]) -> dict[str, JobConfig]:
        for name in jobs:
            if not _NAME.match(str(name)):
                raise ValueError(f"job name {name!r} must be 1 to 100 printable characters")
        return jobs

    @model_validator(mode="after")
    def _jobs_fit_the_file(self) -> Pipeline:
        for name, job in self.jobs.items():
            if job.stage is not None and job.stage not in self.stages:
                raise JobError(
                    name, "stage", f"{job.stage!r} is not one of stages [{', '.join(self.stages)}]"
                )
            if job.image is None and self.image is None:
                raise JobError(name, "image", "no image: set one here or a top-level image")
        return self


class JobError(ValueError):
    """A problem with one key of one job, found only once the whole file is known."""

    def __init__(self, job: str, key: str, message: str) -> None:
        super().__init__(message)
        self.job, self.key, self.message = job, key, message
