"""pipelines.example.yml, the documented example: it loads, uses every key the models know and
comments on each."""

from __future__ import annotations

import re
import typing
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from ciserver.pipeline import Job, Pipeline, load_pipeline
from ciserver.pipeline.loader import load_data

EXAMPLE = Path(__file__).resolve().parent.parent / "pipelines.example.yml"


def test_the_example_file_loads_and_shows_every_key() -> None:
    pipeline = load_pipeline(EXAMPLE.read_bytes())
    push = pipeline.on.push if pipeline.on else None
    assert push is not None
    assert all(getattr(push, key) for key in ("branches", "tags", "paths", "paths_ignore"))
    assert pipeline.image == "python:3.12-slim"  # images a user's engine can pull
    assert pipeline.env == {"PYTHONDONTWRITEBYTECODE": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "true"}
    assert pipeline.stages == ["lint", "test", "build", "deploy"]
    jobs = pipeline.jobs
    assert all(job.stage for job in jobs.values())
    assert jobs["style"].script == ["python3 -m compileall -q ."]
    assert jobs["integration"].image == "busybox:1.36"
    assert jobs["unit"].env == {"PYTEST_ADDOPTS": "-ra"}
    assert [jobs[name].timeout for name in ("unit", "package")] == [600, 5400]
    images = {job.image for job in jobs.values()} | {s.image for job in jobs.values() for s in job.services}
    assert images - {None, "${CI_RELEASE_IMAGE}"} == {
        "python:3.12-slim",
        "busybox:1.36",
    }


def keys_used(data: Any, path: tuple[str, ...] = ()) -> set[tuple[str, ...]]:
    """Every key path of a file as the models name it: jobs.unit.retry.max is ("Job", "retry", "max")."""
    found: set[tuple[str, ...]] = set()
    if isinstance(data, list):
        for item in data:
            found |= keys_used(item, path)
    elif isinstance(data, dict):
        for key, value in data.items():
            if path == ("jobs",):
                found |= keys_used(value, ("Job",))
            elif path == ("environments",):
                # Environment names, not keys: staging.auto is ("environments", "auto").
                found |= {(*path, *key[1:]) for key in keys_used(value, ("Environment",))}
            elif path[-1:] in (("env",), ("build_args",), ("matrix",)):
                continue  # variable names, not keys
            else:
                found.add((*path, key))
                found |= keys_used(value, (*path, key))
    return found


def keys_known(model: type[BaseModel], path: tuple[str, ...]) -> set[tuple[str, ...]]:
    """Every key path the models accept, through sub-models (also in lists and `X | None`)."""
    known: set[tuple[str, ...]] = set()
    for name, info in model.model_fields.items():
        key = (*path, info.alias or name)
        known.add(key)
        for sub in _submodels(info.annotation):
            known |= keys_known(sub, ("Job",) if sub is Job else key)
    return known


def _submodels(annotation: Any) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [sub for arg in typing.get_args(annotation) for sub in _submodels(arg)]


def test_the_example_file_uses_every_key_and_comments_on_each() -> None:
    text = EXAMPLE.read_text()
    known = keys_known(Pipeline, ())
    used = keys_used(load_data(text))
    assert used <= known
    assert known - used == set(), "pipelines.example.yml should show every key"
    commented = set(re.findall(r"^ *# ([a-z_]+): ", text, re.MULTILINE))
    assert {path[-1] for path in known} - commented == set(), "each key needs a `# key: ...` comment"


def test_the_example_file_mentions_what_every_job_is_given() -> None:
    text = EXAMPLE.read_text()
    variables = ["CI=true", "CI_COMMIT_SHA", "CI_COMMIT_BRANCH", "CI_BUILD_ID", "CI_JOB_NAME", "CI_PROJECT"]
    for phrase in [*variables, "sh -e", "/workspace", "jobs after it are skipped"]:
        assert phrase in text
