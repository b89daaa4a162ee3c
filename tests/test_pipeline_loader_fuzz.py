"""Hostile or random input, generated: any text, bytes or YAML structure loads or raises a
PipelineError and nothing else, and a pipeline that loads always plans."""

from __future__ import annotations

from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ciserver.pipeline import Pipeline, PipelineError, load_pipeline, plan_jobs, push_skip_reason


def loads_or_refuses(text: str | bytes) -> None:
    """The property: any input loads, or raises PipelineError; nothing else escapes."""
    try:
        assert isinstance(load_pipeline(text), Pipeline)
    except PipelineError as error:
        assert error.file == "pipelines.yml"
        assert error.line is None or error.line >= 1
        assert error.message


@settings(max_examples=500, deadline=None)
@given(st.text(max_size=400))
def test_any_text_loads_or_raises_only_a_pipeline_error(text: str) -> None:
    loads_or_refuses(text)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200))
def test_any_bytes_load_or_raise_only_a_pipeline_error(data: bytes) -> None:
    loads_or_refuses(data)


KEYS = ["on", "push", "branches", "tags", "paths", "paths_ignore", "image", "env", "stages", "jobs"]
KEYS += ["stage", "script", "timeout", "unit", "A", "<<", "x"]
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(),
    st.sampled_from(["test", "build", "10m", "1h30m", "ten", "main", "release/*", "-x", "busybox", ""]),
    st.text(max_size=12),
)
documents = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=5), inner, max_size=5),
    ),
    max_leaves=25,
)


def sometimes(valid: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Mostly a valid value, now and then anything at all."""
    return st.integers(0, 19).flatmap(lambda n: valid if n else documents)


names = st.sampled_from(["test", "build", "lint", "unit", "a b/c"])
images = st.sampled_from(["ciserver-test/busybox", "ciserver-test/python:3.11"])
envs = st.dictionaries(
    st.sampled_from(["A", "B", "CI"]), st.booleans() | st.integers() | st.text(max_size=5), max_size=3
)
timeouts = st.sampled_from([90, "10m", "1h30m", "2h"])
patterns = st.lists(
    st.sampled_from(["main", "release/*", "**", "v[0-9]+", "src/**", "!dev"]), min_size=1, max_size=3
)
filters = st.fixed_dictionaries(
    {}, optional={key: sometimes(patterns) for key in ("branches", "tags", "paths")}
)
job = st.fixed_dictionaries(
    {"script": sometimes(st.lists(st.text(max_size=10), min_size=1, max_size=3))},
    optional={
        "stage": sometimes(st.just("test")),
        "image": sometimes(images),
        "env": envs,
        "timeout": timeouts,
    },
)
pipelines = st.fixed_dictionaries(
    {"image": sometimes(images), "jobs": st.dictionaries(names, sometimes(job), min_size=1, max_size=4)},
    optional={
        "on": sometimes(st.fixed_dictionaries({"push": sometimes(filters)})),
        "env": sometimes(envs),
        "stages": sometimes(st.sampled_from([["test"], ["test", "build"], ["build", "test"]])),
    },
)


@settings(max_examples=400, deadline=None)
@given(st.dictionaries(st.sampled_from(KEYS), documents, max_size=6) | pipelines)
def test_any_structured_document_loads_or_raises_only_a_pipeline_error(document: dict[str, object]) -> None:
    loads_or_refuses(yaml.safe_dump(document))


@settings(max_examples=300, deadline=None)
@given(
    pipelines, st.sampled_from([None, "main", "dev", "release/1"]), st.lists(st.text(max_size=10)) | st.none()
)
def test_a_pipeline_that_loads_always_plans(
    document: dict[str, object], branch: str | None, files: object
) -> None:
    try:
        pipeline = load_pipeline(yaml.safe_dump(document))
    except PipelineError:
        return
    plan = plan_jobs(pipeline)
    assert sorted(job.name for job in plan) == sorted(pipeline.jobs)
    reason = push_skip_reason(pipeline, branch=branch, tag=None, changed_files=files)  # type: ignore[arg-type]
    assert reason is None or isinstance(reason, str)


TOKENS = [
    "image: x",
    "jobs:",
    "  a:",
    "    script: [x]",
    "    <<: *d",
    "  b: &d",
    "    timeout: 1m",
    "env: &e",
]
TOKENS += [
    "  - *e",
    "  A: *e",
    "<<: *e",
    "- ",
    "? ",
    ": ",
    "{",
    "}",
    "[",
    "]",
    "&d ",
    "*d",
    "!!str ",
    "!x ",
    "'",
    '"',
]
TOKENS += [
    "\t",
    "---",
    "...",
    "#",
    "%YAML 1.1",
    "|",
    ">",
    "\\",
    "stages: [test, test]",
    "on: {push: {tags: v*}}",
]


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.lists(st.sampled_from(TOKENS), max_size=4).map("".join), max_size=12).map("\n".join))
def test_any_yaml_ish_text_with_anchors_and_merges_loads_or_raises_only_a_pipeline_error(text: str) -> None:
    loads_or_refuses(text)
