"""Loading pipelines.yml: what loads, and errors that name the file, line and key."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ciserver.pipeline import PipelineError, load_pipeline

EXAMPLE = Path(__file__).resolve().parent.parent / "pipelines.example.yml"


def error_of(text: str | bytes) -> PipelineError:
    with pytest.raises(PipelineError) as caught:
        load_pipeline(text)
    return caught.value


def test_the_example_file_loads_with_every_key() -> None:
    pipeline = load_pipeline(EXAMPLE.read_text())
    assert pipeline.stages == ["lint", "test", "build"]
    assert pipeline.on and pipeline.on.push and pipeline.on.push.paths_ignore == ["docs/**", "**/*.md"]
    assert pipeline.jobs["unit"].timeout == 600
    assert pipeline.env["PIP_DISABLE_PIP_VERSION_CHECK"] == "true"
    assert pipeline.jobs["style"].script == ["python3 -m compileall -q ."]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "image: x\njobs:\n  hello:\n    scrpit: [echo hi]\n",
            "pipelines.yml:4: jobs.hello.scrpit: unknown key",
        ),
        ("image: x\nartifacts: {}\njobs:\n  a: {script: [x]}\n", "pipelines.yml:2: artifacts: unknown key"),
        (
            "image: x\njobs:\n  a:\n    script: [x]\n    timeout: ten minutes\n",
            "pipelines.yml:5: jobs.a.timeout: invalid duration 'ten minutes'",
        ),
        (
            "image: x\njobs:\n  a:\n    script: [x]\n    timeout: 0\n",
            "pipelines.yml:5: jobs.a.timeout: must be longer",
        ),
        (
            "image: x\nstages: [test, build]\njobs:\n  lint:\n    stage: deploy\n    script: [x]\n",
            "pipelines.yml:5: jobs.lint.stage: 'deploy' is not one of stages [test, build]",
        ),
        ("jobs:\n  a:\n    script: [x]\n", "pipelines.yml:2: jobs.a.image: no image"),
        ("image: x\njobs:\n  a:\n    script: []\n", "pipelines.yml:4: jobs.a.script:"),
        ("image: x\njobs: {}\n", "pipelines.yml:2: jobs:"),
        ("image: x\n", "pipelines.yml:1: jobs: is required"),
        (
            "image: x\nstages: [a, a]\njobs:\n  j: {script: [x]}\n",
            "pipelines.yml:2: stages: stage names must be unique",
        ),
        ("image: x\njobs:\n  a:\n    script: [x]\n    env: {A: [1]}\n", "pipelines.yml:5: jobs.a.env.A:"),
        (
            "image: '--privileged'\njobs:\n  a: {script: [x]}\n",
            "pipelines.yml:1: image: '--privileged' is not an image",
        ),
        ("image: 'a b'\njobs:\n  a: {script: [x]}\n", "pipelines.yml:1: image:"),
        ("image: x\njobs:\n  a: {script: [x]}\nimage: y\n", "pipelines.yml:4: image: duplicate key"),
        ("image: x\njobs:\n  a: {script: [x\n", "pipelines.yml:4: invalid YAML"),
        ("- just\n- a list\n", "pipelines.yml:1: must be a mapping"),
        ("", "pipelines.yml:1: must be a mapping"),
        (b"image: \xff\n", "pipelines.yml:1: is not UTF-8"),
    ],
)
def test_errors_name_the_line_and_the_key(text: str, expected: str) -> None:
    assert str(error_of(text)).startswith(expected), str(error_of(text))


def test_an_alias_bomb_is_refused_without_expanding_it() -> None:
    lines = ["a: &a [1, 1, 1, 1, 1, 1, 1, 1, 1, 1]"]
    for n in range(1, 9):
        lines.append(f"l{n}: &l{n} [" + ", ".join([f"*{'a' if n == 1 else f'l{n - 1}'}"] * 10) + "]")
    assert "too many nodes after alias expansion" in str(error_of("\n".join(lines) + "\n"))


def test_anchors_and_merge_keys_keep_working() -> None:
    text = """\
image: x
.defaults: &defaults
  timeout: 90s
  env: {A: "1"}
jobs:
  a:
    <<: *defaults
    script: [echo a]
"""
    # `.defaults` is not a key ciserver knows, so templates live under jobs' own keys instead:
    assert "unknown key" in str(error_of(text))
    pipeline = load_pipeline(
        "image: x\njobs:\n  a: &job {script: [echo a], timeout: 90s}\n"
        "  b:\n    <<: *job\n    script: [echo b]\n"
    )
    assert (pipeline.jobs["b"].timeout, pipeline.jobs["b"].script) == (90, ["echo b"])


def test_a_file_over_the_size_limit_is_refused() -> None:
    assert "the limit is 262144" in str(error_of("image: x\n" + "#" * 300_000 + "\n"))


def test_yaml_11_booleans_are_plain_strings() -> None:
    pipeline = load_pipeline(
        "on:\n  push:\n    branches: [no, yes, on]\nimage: x\njobs:\n  a: {script: [x]}\n"
    )
    assert pipeline.on and pipeline.on.push and pipeline.on.push.branches == ["no", "yes", "on"]


@pytest.mark.parametrize(
    ("value", "seconds"), [(90, 90), ("90", 90), ("90s", 90), ("10m", 600), ("1h30m", 5400), ("2h", 7200)]
)
def test_timeouts_accept_seconds_and_durations(value: object, seconds: int) -> None:
    pipeline = load_pipeline(f"image: x\njobs:\n  a:\n    script: [x]\n    timeout: {value}\n")
    assert pipeline.jobs["a"].timeout == seconds


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=400))
def test_any_text_loads_or_raises_the_loaders_own_error(text: str) -> None:
    try:
        load_pipeline(text)
    except PipelineError:
        pass


_scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=12))
_documents = st.recursive(
    _scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(
            st.sampled_from(["image", "jobs", "script", "stage", "on", "env", "x"]), inner, max_size=4
        ),
    ),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(_documents)
def test_any_structured_document_loads_or_raises_the_loaders_own_error(document: object) -> None:
    import yaml

    try:
        load_pipeline(yaml.safe_dump(document))
    except PipelineError as error:
        assert error.file == "pipelines.yml"
