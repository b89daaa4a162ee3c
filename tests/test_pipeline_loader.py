"""Loading pipelines.yml: what loads, what each key becomes, and errors that name the file, line
and key; hostile files are refused with a PipelineError and nothing else."""

from __future__ import annotations

import json
import pickle
import re
import typing
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from ciserver.pipeline import (
    HashFiles,
    Job,
    Pipeline,
    PipelineError,
    Retry,
    cache_key_parts,
    load_pipeline,
    plan_jobs,
    push_skip_reason,
)
from ciserver.pipeline.loader import MAX_BYTES, load_data

EXAMPLE = Path(__file__).resolve().parent.parent / "pipelines.example.yml"
JOB = "jobs:\n  a: {script: [x]}\n"


def error_of(text: str | bytes) -> PipelineError:
    with pytest.raises(PipelineError) as caught:
        load_pipeline(text)
    return caught.value


def test_the_example_file_loads_and_shows_every_key() -> None:
    pipeline = load_pipeline(EXAMPLE.read_bytes())
    push = pipeline.on.push if pipeline.on else None
    assert push is not None
    assert all(getattr(push, key) for key in ("branches", "tags", "paths", "paths_ignore"))
    assert pipeline.image == "ciserver-test/python:3.11"
    assert pipeline.env == {"PYTHONDONTWRITEBYTECODE": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "true"}
    assert pipeline.stages == ["lint", "test", "build", "deploy"]
    jobs = pipeline.jobs
    assert all(job.stage for job in jobs.values())
    assert jobs["style"].script == ["python3 -m compileall -q ."]
    assert jobs["integration"].image == "ciserver-test/busybox:latest"
    assert jobs["unit"].env == {"PYTEST_ADDOPTS": "-ra"}
    assert [jobs[name].timeout for name in ("unit", "package")] == [600, 5400]
    images = {job.image for job in jobs.values()} | {s.image for job in jobs.values() for s in job.services}
    assert images - {None, "${CI_RELEASE_IMAGE}"} == {
        "ciserver-test/python:3.11",
        "ciserver-test/busybox:latest",
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


def test_a_minimal_file_gets_the_defaults() -> None:
    pipeline = load_pipeline("image: ciserver-test/busybox\n" + JOB)
    assert (pipeline.on, pipeline.env, pipeline.stages) == (None, {}, ["test"])
    job = pipeline.jobs["a"]
    assert (job.stage, job.image, job.script, job.env, job.timeout) == (None, None, ["x"], {}, None)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "image: x\njobs:\n  hello:\n    scrpit: [echo hi]\n",
            "pipelines.yml:4: jobs.hello.scrpit: unknown key (did you mean 'script'?)",
        ),
        ("image: x\nartifacts: {}\n" + JOB, "pipelines.yml:2: artifacts: unknown key"),
        ("image: x\non:\n  pull_request: {}\n" + JOB, "pipelines.yml:3: on.pull_request: unknown key"),
        (
            "image: x\non:\n  push:\n    branch: [main]\n" + JOB,
            "pipelines.yml:4: on.push.branch: unknown key (did you mean 'branches'?)",
        ),
        (
            "image: x\njobs:\n  a:\n    script: [x]\n    timeout: ten minutes\n",
            "pipelines.yml:5: jobs.a.timeout: invalid duration 'ten minutes' (use 90s, 10m, 1h30m or seconds",
        ),
        (
            "image: x\njobs:\n  a:\n    script: [x]\n    timeout: 0\n",
            "pipelines.yml:5: jobs.a.timeout: a timeout must be more than 0s and at most 30 days, not 0s",
        ),
        (
            "image: x\njobs:\n  a: {script: [x], timeout: -5}\n",
            "pipelines.yml:3: jobs.a.timeout: a timeout must",
        ),
        (
            "image: x\njobs:\n  a: {script: [x], timeout: 31d}\n",
            "pipelines.yml:3: jobs.a.timeout: invalid duration",
        ),
        (
            "image: x\njobs:\n  a: {script: [x], timeout: 1.5}\n",
            "pipelines.yml:3: jobs.a.timeout: invalid duration",
        ),
        (
            "image: x\njobs:\n  a: {script: [x], timeout: true}\n",
            "pipelines.yml:3: jobs.a.timeout: invalid duration",
        ),
        (
            "image: x\njobs:\n  a: {script: [x], timeout: 1000h}\n",
            "pipelines.yml:3: jobs.a.timeout: a timeout must",
        ),
        (
            "image: x\nstages: [test, build]\njobs:\n  ok: {script: [x]}\n"
            "  lint:\n    stage: deploy\n    script: [x]\n",
            "pipelines.yml:6: jobs.lint.stage: 'deploy' is not one of stages [test, build]",
        ),
        (
            "jobs:\n  a:\n    script: [x]\n",
            "pipelines.yml:2: jobs.a: job 'a' has no image: give it one or set a top-level image",
        ),
        ("image: x\njobs:\n  a:\n    script: []\n", "pipelines.yml:4: jobs.a.script: must not be empty"),
        (
            "image: x\njobs:\n  a:\n    image: y\n",
            "pipelines.yml:3: jobs.a: the job needs a script (or an image_build)",
        ),
        (
            "image: x\njobs:\n  a:\n    script:\n      - ok\n      - 5\n",
            "pipelines.yml:6: jobs.a.script[1]: expected a string",
        ),
        ("image: x\njobs:\n  a:\n", "pipelines.yml:3: jobs.a: expected a mapping, got nothing"),
        ("image: x\njobs: {}\n", "pipelines.yml:2: jobs: must not be empty"),
        ("image: x\njobs: [a, b]\n", "pipelines.yml:2: jobs: expected a mapping, got a list"),
        ("image: x\n", "pipelines.yml:1: jobs: required key is missing"),
        ("image: x\nstages: [a, b, a]\n" + JOB, "pipelines.yml:2: stages[2]: stage 'a' is listed twice"),
        ("image: x\nstages: []\n" + JOB, "pipelines.yml:2: stages: must not be empty"),
        ("image: x\nenv: {A: [1]}\n" + JOB, "pipelines.yml:2: env.A: expected a string, number or boolean"),
        ("image: x\nenv: {A: }\n" + JOB, "pipelines.yml:2: env.A: expected a string, number or boolean"),
        ("image: x\nenv: {1A: b}\n" + JOB, "pipelines.yml:2: env.1A: invalid variable name '1A'"),
        ("image: x\nenv: {A=B: b}\n" + JOB, "pipelines.yml:2: env.A=B: invalid variable name"),
        ('image: x\nenv: {A: "a\\0b"}\n' + JOB, "pipelines.yml:2: env.A: must not contain a NUL character"),
        ("image: '--privileged'\n" + JOB, "pipelines.yml:1: image: invalid image '--privileged'"),
        ("image: 'a b'\n" + JOB, "pipelines.yml:1: image: invalid image 'a b'"),
        ('image: "a\\tb"\n' + JOB, "pipelines.yml:1: image: invalid image 'a\\tb'"),
        ('image: "a\\x1bb"\n' + JOB, "pipelines.yml:1: image: invalid image 'a\\x1bb'"),
        ("image: ''\n" + JOB, "pipelines.yml:1: image: invalid image ''"),
        (
            "image: x\njobs:\n  a: {image: -v, script: [x]}\n",
            "pipelines.yml:3: jobs.a.image: invalid image '-v'",
        ),
        (
            "image: x\njobs:\n  " + "n" * 101 + ": {script: [x]}\n",
            "pipelines.yml:3: jobs." + "n" * 101 + ": a name must be at most 100 characters",
        ),
        (
            'image: x\njobs:\n  "a\\nb": {script: [x]}\n',
            "pipelines.yml:3: jobs.'a\\nb': 'a\\nb' contains a tab, newline or other unprintable character",
        ),
        ('image: x\nstages: ["t\\tx"]\n' + JOB, "pipelines.yml:2: stages[0]: 't\\tx' contains a tab"),
        (
            "image: x\njobs:\n  a: {script: [x], stage: ''}\n",
            "pipelines.yml:3: jobs.a.stage: a name must not be empty",
        ),
        (
            "image: x\non: {push: {branches: ['!dev']}}\n" + JOB,
            "pipelines.yml:2: on.push.branches: needs at least one pattern without '!'",
        ),
        (
            "image: x\non: {push: {paths: ['']}}\n" + JOB,
            "pipelines.yml:2: on.push.paths: a pattern must not be empty",
        ),
        (
            "image: x\non: {push: {tags: [1]}}\n" + JOB,
            "pipelines.yml:2: on.push.tags[0]: expected a string, got a number",
        ),
        ("image: x\non: push\n" + JOB, "pipelines.yml:2: on: expected a mapping, got a string"),
    ],
)
def test_an_invalid_file_is_an_error_naming_its_line_and_key(text: str, expected: str) -> None:
    assert str(error_of(text)).startswith(expected), str(error_of(text))


def test_an_unknown_key_is_an_error_naming_its_own_line() -> None:
    error = error_of("image: x\njobs:\n  a:\n    script: [x]\n    env: {A: b}\n\n    scrpt: [y]\n")
    assert (error.file, error.line, error.key) == ("pipelines.yml", 7, "jobs.a.scrpt")
    assert error.message.startswith("unknown key")


def test_a_misspelt_key_is_reported_rather_than_the_required_one_it_leaves_missing() -> None:
    error = error_of("image: x\njobs:\n  a:\n    image: y\n    scrpit: [echo hi]\n")
    assert (error.line, error.key) == (5, "jobs.a.scrpit")


def test_the_earliest_problem_is_reported_first() -> None:
    error = error_of("image: x\njobs:\n  a: {script: [x], timeout: 0}\n  b: {script: [x], timeout: never}\n")
    assert (error.line, error.key) == (3, "jobs.a.timeout")


def test_the_file_name_given_is_the_one_errors_name() -> None:
    with pytest.raises(PipelineError) as caught:
        load_pipeline("image: x\nimage: y\n", filename=".ciserver/pipelines.yml")
    error = caught.value
    assert str(error) == ".ciserver/pipelines.yml:2: image: duplicate key 'image' (first on line 1)"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "image: x\n" + JOB + "image: y\n",
            "pipelines.yml:4: image: duplicate key 'image' (first on line 1)",
        ),
        (
            "image: x\njobs:\n  a: {script: [x]}\n  a: {script: [y]}\n",
            "pipelines.yml:4: jobs.a: duplicate key 'a' (first on line 3)",
        ),
        (
            "image: x\nenv: {A: 1, A: 2}\n" + JOB,
            "pipelines.yml:2: env.A: duplicate key 'A' (first on line 2)",
        ),
    ],
)
def test_a_duplicate_key_is_an_error_naming_the_key_and_both_lines(text: str, expected: str) -> None:
    assert str(error_of(text)) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "image: x\njobs:\n  a: {script: [x\n",
            "pipelines.yml:4: invalid YAML: while parsing a flow sequence",
        ),
        ("image: x\n  jobs: y\n", "pipelines.yml:2: invalid YAML: mapping values are not allowed here"),
        ("image: x\njobs:\n\t- a\n", "pipelines.yml:3: invalid YAML:"),
        ("image: x\nenv: *nowhere\n", "pipelines.yml:2: invalid YAML: found undefined alias 'nowhere'"),
        ("image: x\n---\nimage: y\n", "pipelines.yml:2: invalid YAML: expected a single document"),
        (
            "image: x\njobs:\n  a: {script: [\x07]}\n",
            "pipelines.yml:3: invalid YAML: character U+0007 is not allowed",
        ),
        ("- just\n- a list\n", "pipelines.yml:1: the top level must be a mapping"),
        ("# only a comment\n\nimage\n", "pipelines.yml:1: the top level must be a mapping"),
        ("", "pipelines.yml:1: the file is empty"),
        ("# nothing but comments\n\n", "pipelines.yml:1: the file is empty"),
        (b"image: x\n" + JOB.encode() + b"# caf\xe9\n", "pipelines.yml:1: the file is not UTF-8 (byte 39)"),
        (b"\xff\xfe", "pipelines.yml:1: the file is not UTF-8"),
        ("image: x\njobs:\n  a: !!binary aGk=\n", "pipelines.yml:3: jobs.a: unsupported YAML tag"),
        ("image: !local x\n" + JOB, "pipelines.yml:1: image: unsupported YAML tag '!local'"),
        ("image: x\njobs: !!omap [a: {script: [x]}]\n", "pipelines.yml:2: jobs: unsupported YAML tag"),
        (
            "image: x\njobs:\n  ? [a, b]\n  : {script: [x]}\n",
            "pipelines.yml:3: jobs: a key must be a plain string",
        ),
    ],
)
def test_a_file_that_is_not_a_yaml_mapping_is_an_error_with_a_line(text: str | bytes, expected: str) -> None:
    assert str(error_of(text)).startswith(expected), str(error_of(text))


def test_a_file_over_256_kib_is_refused_naming_its_size() -> None:
    padding = "#" * (MAX_BYTES - len("image: x\n" + JOB) - 1) + "\n"
    assert load_pipeline("image: x\n" + JOB + padding).image == "x"
    error = error_of("image: x\n" + JOB + padding + "#")
    assert error.line == 1
    assert f"{MAX_BYTES + 1:,} bytes" in error.message and "256 KiB" in error.message
    assert "bytes" in error_of(("é" * (MAX_BYTES // 2 + 1)).encode()).message


def test_an_alias_bomb_is_refused() -> None:
    lines = ["a: &a [x, x, x, x, x, x, x, x, x, x]"]
    lines += [
        f"l{n}: &l{n} [" + ", ".join([f"*{'a' if n == 1 else f'l{n - 1}'}"] * 10) + "]" for n in range(1, 9)
    ]
    error = error_of("\n".join(lines) + "\n" + JOB)
    assert "too many nodes after alias expansion" in error.message


@pytest.mark.parametrize(
    "text",
    [
        "image: x\nenv: &loop [*loop]\n" + JOB,
        "image: x\nenv: &loop {<<: *loop}\n" + JOB,
        "image: x\nenv: " + "[" * 80 + "]" * 80 + "\n" + JOB,
        "image: x\nenv: " + "[" * 5000 + "\n",
        "image: x\nenv: " + "{a: " * 5000 + "\n",
    ],
)
def test_a_recursive_alias_or_deep_nesting_is_refused(text: str) -> None:
    assert "nested" in error_of(text).message


def test_anchors_aliases_and_merge_keys_keep_working() -> None:
    pipeline = load_pipeline(
        """\
image: ciserver-test/busybox
stages: [test, build]
jobs:
  unit: &defaults
    script: &setup [echo setup, echo unit]
    env: {A: "1"}
    timeout: 90s
  lint:
    <<: *defaults
    script: [echo lint]
  package:
    <<: [{stage: build}, *defaults]
    script: *setup
    timeout: 2m
"""
    )
    unit, lint, package = pipeline.jobs.values()
    assert (lint.script, lint.env, lint.timeout) == (["echo lint"], {"A": "1"}, 90)
    assert (package.stage, package.script, package.timeout) == ("build", unit.script, 120)
    assert list(pipeline.jobs) == ["unit", "lint", "package"]


def test_a_problem_inside_a_merged_mapping_points_at_the_mapping_it_came_from() -> None:
    error = error_of("image: x\njobs:\n  a: &d\n    script: [x]\n    timeout: soon\n  b:\n    <<: *d\n")
    assert (error.line, error.key) == (5, "jobs.a.timeout")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ('"x"', "x"),
        ("text with spaces", "text with spaces"),
        ("8080", "8080"),
        ("010", "10"),
        ("1.5", "1.5"),
        ('"3.10"', "3.10"),
        ("true", "true"),
        ("False", "false"),
        ("yes", "yes"),
        ("on", "on"),
        ("0x1F", "0x1F"),
        ("1:30", "1:30"),
        ("2024-01-01", "2024-01-01"),
        ('""', ""),
    ],
)
def test_env_values_become_strings_as_yaml_12_reads_them(value: str, expected: str) -> None:
    assert load_pipeline(f"image: x\nenv: {{V: {value}}}\n" + JOB).env == {"V": expected}


def test_yaml_11_booleans_are_plain_strings_so_on_is_a_key() -> None:
    pipeline = load_pipeline("on:\n  push:\n    branches: [no, yes, on, off]\nimage: x\n" + JOB)
    assert pipeline.on and pipeline.on.push and pipeline.on.push.branches == ["no", "yes", "on", "off"]


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("90", 90),
        ("'90'", 90),
        ("90s", 90),
        ("10m", 600),
        ("1h30m", 5400),
        ("2h", 7200),
        ("1h1m1s", 3661),
        ("720h", 30 * 24 * 3600),
    ],
)
def test_a_timeout_is_seconds_or_a_duration(value: str, seconds: int) -> None:
    pipeline = load_pipeline(f"image: x\njobs:\n  a:\n    script: [x]\n    timeout: {value}\n")
    assert pipeline.jobs["a"].timeout == seconds


@pytest.mark.parametrize("value", ["ten minutes", "1m30h", "10 m", "h", "1.5h", "10M", "-10s", "1d"])
def test_a_timeout_in_another_form_is_refused(value: str) -> None:
    text = f"image: x\njobs:\n  a:\n    script: [x]\n    timeout: '{value}'\n"
    assert error_of(text).message.startswith(f"invalid duration {value!r}")


def test_a_single_string_stands_for_a_list_of_one() -> None:
    pipeline = load_pipeline(
        "on: {push: {branches: main, paths: src/**}}\nimage: x\njobs:\n  a: {script: make test}\n"
    )
    assert pipeline.on and pipeline.on.push
    assert (pipeline.on.push.branches, pipeline.on.push.paths) == (["main"], ["src/**"])
    assert pipeline.jobs["a"].script == ["make test"]


@pytest.mark.parametrize("on", ["", "on:\n", "on: {}\n", "on: {push: }\n", "on: {push: {}}\n"])
def test_on_may_be_absent_or_empty(on: str) -> None:
    assert isinstance(load_pipeline(on + "image: x\n" + JOB), Pipeline)


def test_image_names_with_registries_tags_and_digests_are_accepted() -> None:
    for image in ["ciserver-test/python:3.11", "localhost:5000/team/app:1.2", "busybox@sha256:" + "a" * 64]:
        assert load_pipeline(f"image: {image}\n" + JOB).image == image


def test_a_pipeline_error_carries_its_parts_and_survives_pickling() -> None:
    error = error_of("image: x\njobs:\n  a: {script: [x], timeout: 0}\n")
    assert (error.file, error.line, error.key) == ("pipelines.yml", 3, "jobs.a.timeout")
    assert str(error) == f"pipelines.yml:3: jobs.a.timeout: {error.message}"
    copy = pickle.loads(pickle.dumps(error))
    assert (str(copy), copy.file, copy.line, copy.key, copy.message) == (
        str(error),
        error.file,
        error.line,
        error.key,
        error.message,
    )
    assert str(PipelineError("p.yml", None, None, "gone")) == "p.yml: gone"


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


ONE_JOB = "image: x\njobs:\n  a:\n    script: [echo]\n"


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        # needs
        ("    needs: [nope]\n", "pipelines.yml:5: jobs.a.needs[0]: no job is named 'nope'"),
        ("    needs: [a]\n", "pipelines.yml:5: jobs.a.needs[0]: 'a' needs itself"),
        ("    needs: [style, a]\n", "pipelines.yml:5: jobs.a.needs[0]: no job is named 'style'"),
        (
            "  b: {script: [x]}\n  c:\n    script: [x]\n    needs:\n      - b\n      - b\n",
            "pipelines.yml:10: jobs.c.needs[1]: 'b' is named twice",
        ),
        ("    needs: a\n", "pipelines.yml:5: jobs.a.needs: expected a list, got a string"),
        # when, allow_failure
        (
            "    when: later\n",
            "pipelines.yml:5: jobs.a.when: must be 'on_success', 'on_failure', 'always' or 'manual', "
            "not 'later'",
        ),
        (
            "    allow_failure: yes\n",
            "pipelines.yml:5: jobs.a.allow_failure: expected true or false, got a string",
        ),
        # only / except
        (
            "    only: {branch: [main]}\n",
            "pipelines.yml:5: jobs.a.only.branch: unknown key (did you mean 'branches'?)",
        ),
        (
            "    except: {pathes: [x]}\n",
            "pipelines.yml:5: jobs.a.except.pathes: unknown key (did you mean 'paths'?)",
        ),
        (
            "    only: {branches: ['!main']}\n",
            "pipelines.yml:5: jobs.a.only.branches: needs at least one pattern",
        ),
        ("    only: [main]\n", "pipelines.yml:5: jobs.a.only: expected a mapping, got a list"),
        # matrix
        (
            "    matrix: {A: [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11], B: [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]}\n",
            "pipelines.yml:5: jobs.a.matrix: 110 combinations, over the limit of 100",
        ),
        (
            "    matrix:\n      A: [x, y]\n      B:\n        - 1\n        - '1'\n",
            "pipelines.yml:9: jobs.a.matrix.B[1]: '1' is listed twice",
        ),
        ("    matrix: {}\n", "pipelines.yml:5: jobs.a.matrix: must not be empty"),
        ("    matrix: {A: []}\n", "pipelines.yml:5: jobs.a.matrix.A: must not be empty"),
        ("    matrix: {1A: [x]}\n", "pipelines.yml:5: jobs.a.matrix.1A: invalid variable name '1A'"),
        (
            "    matrix: {A: [[x]]}\n",
            "pipelines.yml:5: jobs.a.matrix.A[0]: expected a string, number or boolean",
        ),
        (
            "    matrix: {A: ['" + "x" * 95 + "']}\n",
            "pipelines.yml:5: jobs.a.matrix: the variant name 'a [A=xxx",
        ),
        (
            "    matrix: {A: ['x\\ty']}\n".replace("'", '"'),
            "pipelines.yml:5: jobs.a.matrix: the variant name 'a [A=x\\ty]' has a tab",
        ),
        (
            "    matrix: {A: [1]}\n  'a [A=1]': {script: [x]}\n",
            "pipelines.yml:5: jobs.a.matrix: the variant name 'a [A=1]' is already taken by another job",
        ),
        # services
        (
            "    network: none\n    services: [{image: db}]\n",
            "pipelines.yml:5: jobs.a.network: network: none leaves no way to reach its services",
        ),
        (
            "    services: [{image: db, alias: Not_A_Host}]\n",
            "pipelines.yml:5: jobs.a.services[0].alias: alias 'Not_A_Host' must be a host name",
        ),
        (
            "    services:\n      - image: my_db\n",
            "pipelines.yml:6: jobs.a.services[0]: alias 'my_db' (from the image name; set `alias`) "
            "must be a host name",
        ),
        (
            "    services:\n      - image: db\n      - image: other/db:2\n",
            "pipelines.yml:7: jobs.a.services[1]: alias 'db' is taken by an earlier service",
        ),
        (
            "    services: [{image: db, command: 'sh -c \"unclosed'}]\n",
            "pipelines.yml:5: jobs.a.services[0].command: cannot split",
        ),
        (
            "    services: [{image: db, command: []}]\n",
            "pipelines.yml:5: jobs.a.services[0].command: must not be",
        ),
        (
            "    services: [{alias: db}]\n",
            "pipelines.yml:5: jobs.a.services[0].image: required key is missing",
        ),
        (
            "    services: [{image: db, port: 5432}]\n",
            "pipelines.yml:5: jobs.a.services[0].port: unknown key",
        ),
        ("    services: [{image: -v}]\n", "pipelines.yml:5: jobs.a.services[0].image: invalid image '-v'"),
        # artifacts, cache: paths stay inside the workspace
        (
            "    artifacts: {paths: [../etc]}\n",
            "pipelines.yml:5: jobs.a.artifacts.paths[0]: '../etc' must be a relative path "
            "that stays inside the workspace",
        ),
        (
            "    artifacts: {paths: [/etc/passwd]}\n",
            "pipelines.yml:5: jobs.a.artifacts.paths[0]: '/etc/passwd' must",
        ),
        (
            "    artifacts:\n      paths:\n        - dist\n        - dist/../..\n",
            "pipelines.yml:8: jobs.a.artifacts.paths[1]: 'dist/../..' must be a relative path",
        ),
        (
            "    artifacts: {paths: ['']}\n",
            "pipelines.yml:5: jobs.a.artifacts.paths[0]: '' must be a relative",
        ),
        ('    artifacts: {paths: ["a\\0b"]}\n', "pipelines.yml:5: jobs.a.artifacts.paths[0]: 'a\\x00b' must"),
        ("    artifacts: {paths: []}\n", "pipelines.yml:5: jobs.a.artifacts.paths: must not be empty"),
        (
            "    artifacts: {expire_in: 7d}\n",
            "pipelines.yml:5: jobs.a.artifacts.paths: required key is missing",
        ),
        (
            "    artifacts: {paths: [a], expire_in: soon}\n",
            "pipelines.yml:5: jobs.a.artifacts.expire_in: invalid duration 'soon'",
        ),
        (
            "    artifacts: {paths: [a], expire_in: 0}\n",
            "pipelines.yml:5: jobs.a.artifacts.expire_in: must be more",
        ),
        (
            "    artifacts: {path: [a]}\n",
            "pipelines.yml:5: jobs.a.artifacts.path: unknown key (did you mean 'paths'?)",
        ),
        ("    cache: {paths: [a/../../b]}\n", "pipelines.yml:5: jobs.a.cache.paths[0]: 'a/../../b' must"),
        (
            "    cache: {key: '{{ env.X }}', paths: [c]}\n",
            "pipelines.yml:5: jobs.a.cache.key: {{ env.X }} is not",
        ),
        (
            "    cache: {key: '{{ hashFiles(a.txt) }}', paths: [c]}\n",
            "pipelines.yml:5: jobs.a.cache.key: hashFiles takes quoted paths",
        ),
        (
            "    cache: {key: \"{{ hashFiles('/etc/passwd') }}\", paths: [c]}\n",
            "pipelines.yml:5: jobs.a.cache.key: '/etc/passwd' must be a relative path",
        ),
        ("    cache: {key: 'pip-{{', paths: [c]}\n", "pipelines.yml:5: jobs.a.cache.key: unbalanced"),
        (
            "    cache: {kye: x, paths: [c]}\n",
            "pipelines.yml:5: jobs.a.cache.kye: unknown key (did you mean 'key'?)",
        ),
        # secrets
        (
            "    secrets:\n      - TOKEN\n      - TOKEN\n",
            "pipelines.yml:7: jobs.a.secrets[1]: 'TOKEN' is named twice",
        ),
        ("    secrets: [1TOKEN]\n", "pipelines.yml:5: jobs.a.secrets[0]: invalid variable name '1TOKEN'"),
        # image_build
        (
            "    image_build: {}\n",
            "pipelines.yml:5: jobs.a.image_build: the job has both a script and an image_build",
        ),
        ("    image_build: {context: ../up}\n", "pipelines.yml:5: jobs.a.image_build.context: '../up' must"),
        (
            "    image_build: {dockerfile: /Dockerfile}\n",
            "pipelines.yml:5: jobs.a.image_build.dockerfile: '/Dock",
        ),
        (
            "    image_build: {build_args: {1X: y}}\n",
            "pipelines.yml:5: jobs.a.image_build.build_args.1X: invalid",
        ),
        (
            "    image_build: {dockerfle: D}\n",
            "pipelines.yml:5: jobs.a.image_build.dockerfle: unknown key (did you",
        ),
        # resources, user, network
        ("    resources: {memory: lots}\n", "pipelines.yml:5: jobs.a.resources.memory: invalid size 'lots'"),
        ("    resources: {memory: 0}\n", "pipelines.yml:5: jobs.a.resources.memory: must be more than 0"),
        ("    resources: {cpus: 0}\n", "pipelines.yml:5: jobs.a.resources.cpus: must be more than 0"),
        (
            "    resources: {cpus: many}\n",
            "pipelines.yml:5: jobs.a.resources.cpus: expected a number, got a string",
        ),
        ("    resources: {pids: -1}\n", "pipelines.yml:5: jobs.a.resources.pids: must be more than 0"),
        ("    resources: {pids: 1.5}\n", "pipelines.yml:5: jobs.a.resources.pids: expected a whole number"),
        (
            "    resources: {mem: 1g}\n",
            "pipelines.yml:5: jobs.a.resources.mem: unknown key (did you mean 'memory'?)",
        ),
        ("    user: --privileged\n", "pipelines.yml:5: jobs.a.user: invalid user '--privileged'"),
        ("    user: 'a b'\n", "pipelines.yml:5: jobs.a.user: invalid user 'a b'"),
        ("    user: '1:2:3'\n", "pipelines.yml:5: jobs.a.user: invalid user '1:2:3'"),
        ("    user: '1000:'\n", "pipelines.yml:5: jobs.a.user: invalid user '1000:'"),
        ("    user: ':1000'\n", "pipelines.yml:5: jobs.a.user: invalid user ':1000'"),
        ("    network: host\n", "pipelines.yml:5: jobs.a.network: must be 'default' or 'none', not 'host'"),
        # retry
        ("    retry: 9\n", "pipelines.yml:5: jobs.a.retry: must be at most 5, not 9"),
        ("    retry: -1\n", "pipelines.yml:5: jobs.a.retry: must be at least 0, not -1"),
        ("    retry: true\n", "pipelines.yml:5: jobs.a.retry: expected a mapping, got true/false"),
        (
            "    retry: {max: 1, when: [sometimes]}\n",
            "pipelines.yml:5: jobs.a.retry.when[0]: must be 'always', ",
        ),
        ("    retry: {when: [timeout]}\n", "pipelines.yml:5: jobs.a.retry.max: required key is missing"),
        ("    retry: {max: 1, on: [timeout]}\n", "pipelines.yml:5: jobs.a.retry.on: unknown key"),
    ],
)
def test_a_bad_new_key_is_an_error_naming_its_line_and_key(extra: str, expected: str) -> None:
    message = str(error_of(ONE_JOB + extra))
    assert message.startswith(expected), message


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "image: x\njobs:\n  a: {script: [x], needs: [b]}\n  b: {script: [x], needs: [c]}\n"
            "  c:\n    script: [x]\n    needs:\n      - a\n",
            "pipelines.yml:8: jobs.c.needs[0]: a cycle: a -> b -> c -> a",
        ),
        (
            "image: x\nstages: [test, build]\njobs:\n  a:\n    stage: test\n    script: [x]\n    needs: [b]\n"
            "  b: {stage: build, script: [x]}\n",
            "pipelines.yml:7: jobs.a.needs[0]: 'b' is in the later stage 'build': "
            "need jobs of stage 'test' or before",
        ),
        (
            "jobs:\n  a: {image_build: {}, needs: [b]}\n  b: {image: x, script: [x], needs: [a]}\n",
            "pipelines.yml:3: jobs.b.needs[0]: a cycle: a -> b -> a",
        ),
        (
            "image: x\njobs:\n  a:\n    image: y\n",
            "pipelines.yml:3: jobs.a: the job needs a script (or an image_build)",
        ),
    ],
)
def test_a_bad_job_graph_is_an_error_at_the_entry_to_change(text: str, expected: str) -> None:
    assert str(error_of(text)) == expected


def test_a_long_chain_of_needs_loads_and_a_cycle_at_its_end_is_found() -> None:
    jobs = "".join(f"  j{n}: {{script: [x], needs: [j{n - 1}]}}\n" for n in range(1, 5000))
    pipeline = load_pipeline("image: x\njobs:\n  j0: {script: [x]}\n" + jobs)
    assert pipeline.jobs["j4999"].needs == ["j4998"]
    error = error_of("image: x\njobs:\n  j0: {script: [x], needs: [j4999]}\n" + jobs)
    assert (error.line, error.key) == (4, "jobs.j1.needs[0]")
    shortened = "j0 -> j4999 -> j4998 -> j4997 -> ... -> j3 -> j2 -> j1 -> j0"
    assert error.message == f"a cycle of 5000 jobs: {shortened}"


NEW_KEYS = """\
image: ciserver-test/python:3.11
stages: [test, build]
jobs:
  unit:
    script: [pytest]
    needs: []
    when: always
    allow_failure: true
    only: {branches: main, tags: ["v*"], paths: ["src/**"]}
    except: {branches: ["wip/*"]}
    matrix: {PYTHON: ["3.10", 3.12], DEBUG: [true]}
    services:
      - image: ciserver-test/busybox:latest
      - image: localhost:5000/team/postgres:15
        env: {POSTGRES_PASSWORD: x}
        command: postgres -c 'fsync=off'
      - image: redis@sha256:0123
        alias: cache-1
        command: [redis-server, --save, ""]
    artifacts: {paths: reports/, expire_in: 12h}
    cache: {paths: [.cache/pip, .venv]}
    secrets: [PYPI_TOKEN, _OTHER]
    resources: {memory: 1GiB, cpus: 2, pids: 100}
    user: nobody
    network: default
    retry: 2
  build:
    stage: build
    needs: [unit]
    image_build: {build_args: {VERSION: 1.5}}
    resources: {memory: 536870912}
    user: "1000:1000"
    network: none
    retry: {max: 0, when: [script_failure, timeout]}
"""


def test_every_new_key_loads_in_its_documented_forms() -> None:
    jobs = load_pipeline(NEW_KEYS).jobs
    unit, build = jobs["unit"], jobs["build"]
    assert (unit.needs, build.needs) == ([], ["unit"])
    assert (unit.when, unit.allow_failure, build.when, build.allow_failure) == (
        "always",
        True,
        "on_success",
        False,
    )
    assert unit.only is not None and unit.except_ is not None
    assert (unit.only.branches, unit.only.tags, unit.only.paths) == (["main"], ["v*"], ["src/**"])
    assert unit.except_.branches == ["wip/*"]
    assert unit.matrix == {"PYTHON": ["3.10", "3.12"], "DEBUG": ["true"]}
    assert [(s.alias, s.command) for s in unit.services] == [
        ("busybox", None),
        ("postgres", ["postgres", "-c", "fsync=off"]),
        ("cache-1", ["redis-server", "--save", ""]),
    ]
    assert unit.services[1].env == {"POSTGRES_PASSWORD": "x"}
    assert unit.artifacts is not None and (unit.artifacts.paths, unit.artifacts.expire_in) == (
        ["reports/"],
        43200,
    )
    assert unit.cache is not None and (unit.cache.key, unit.cache.paths) == (
        "default",
        [".cache/pip", ".venv"],
    )
    assert unit.secrets == ["PYPI_TOKEN", "_OTHER"]
    assert unit.resources is not None
    assert (unit.resources.memory, unit.resources.cpus, unit.resources.pids) == (1024**3, 2.0, 100)
    assert (unit.user, unit.network, build.user, build.network) == ("nobody", "default", "1000:1000", "none")
    assert unit.retry == Retry(max=2, when=["always"])
    assert build.retry == Retry(max=0, when=["script_failure", "timeout"])
    assert build.script is None and build.image_build is not None
    assert (build.image_build.context, build.image_build.dockerfile, build.image_build.target) == (
        ".",
        "Dockerfile",
        None,
    )
    assert build.image_build.build_args == {"VERSION": "1.5"}
    assert build.resources is not None and build.resources.memory == 512 * 1024**2


def test_artifacts_are_kept_thirty_days_unless_told() -> None:
    job = load_pipeline(ONE_JOB + "    artifacts: {paths: [dist/*.whl]}\n").jobs["a"]
    assert job.artifacts is not None and job.artifacts.expire_in == 30 * 24 * 3600
    for value, seconds in [("7d", 7 * 86400), ("1d12h", 36 * 3600), (90, 90), ("'3600'", 3600)]:
        job = load_pipeline(ONE_JOB + f"    artifacts: {{paths: [a], expire_in: {value}}}\n").jobs["a"]
        assert job.artifacts is not None and job.artifacts.expire_in == seconds


@pytest.mark.parametrize(
    ("memory", "size"),
    [
        ("512m", 512 * 1024**2),
        ("2g", 2 * 1024**3),
        ("64k", 65536),
        ("1GiB", 1024**3),
        ("1000", 1000),
        ("'1 g'", 1024**3),
    ],
)
def test_a_memory_limit_is_bytes_or_a_size(memory: str, size: int) -> None:
    job = load_pipeline(ONE_JOB + f"    resources: {{memory: {memory}}}\n").jobs["a"]
    assert job.resources is not None and job.resources.memory == size


def test_paths_inside_the_workspace_are_accepted() -> None:
    paths = ["dist/*.whl", "reports/", ".", "./build", "a..b", "..hidden", "**/*.xml"]
    job = load_pipeline(ONE_JOB + f"    artifacts: {{paths: {paths}}}\n    cache: {{paths: {paths}}}\n").jobs[
        "a"
    ]
    assert job.artifacts is not None and job.artifacts.paths == paths
    assert job.cache is not None and job.cache.paths == paths


def test_an_image_build_job_needs_no_image_and_no_script() -> None:
    pipeline = load_pipeline("jobs:\n  package:\n    image_build: {context: app, target: runtime}\n")
    build = pipeline.jobs["package"].image_build
    assert build is not None
    assert (build.context, build.dockerfile, build.target) == ("app", "Dockerfile", "runtime")


@pytest.mark.parametrize(
    ("template", "parts"),
    [
        ("default", ["default"]),
        ("pip-{{ hashFiles('requirements.txt') }}", ["pip-", HashFiles(("requirements.txt",))]),
        (
            "{{hashFiles('a.txt', \"src/**/*.lock\")}}-v2",
            [HashFiles(("a.txt", "src/**/*.lock")), "-v2"],
        ),
        (
            "x{{ hashFiles('a') }}{{ hashFiles( 'b' , 'c' ) }}",
            ["x", HashFiles(("a",)), HashFiles(("b", "c"))],
        ),
        ("{ single braces }", ["{ single braces }"]),
    ],
)
def test_a_cache_key_splits_into_text_and_hashfiles_calls_for_the_worker(
    template: str, parts: list[object]
) -> None:
    assert cache_key_parts(template) == parts
    assert (
        load_pipeline(ONE_JOB + f"    cache: {{key: {json.dumps(template)}, paths: [c]}}\n").jobs["a"].cache
    )


@pytest.mark.parametrize(
    "template",
    [
        "{{ env.HOME }}",
        "{{ hashFiles() }}",
        "{{ hashFiles('a',) }}",
        "{{ hashFiles('a' 'b') }}",
        "{{ hashFiles('../a') }}",
        "{{ hashFiles('') }}",
        "{{ hashFiles('a') }",
        "a }} b",
        "{{ hashFiles('a') }} {{ hashfiles('b') }}",
    ],
)
def test_a_cache_key_with_anything_else_in_braces_is_refused(template: str) -> None:
    with pytest.raises(ValueError):
        cache_key_parts(template)
    error = error_of(ONE_JOB + f"    cache: {{key: {json.dumps(template)}, paths: [c]}}\n")
    assert (error.line, error.key) == (5, "jobs.a.cache.key")


def test_env_values_and_matrix_values_stay_strings() -> None:
    job = load_pipeline(ONE_JOB + "    matrix: {V: [010, 1.5, false, '3.10', x y]}\n").jobs["a"]
    assert job.matrix == {"V": ["10", "1.5", "false", "3.10", "x y"]}
