"""Loading pipelines.yml: the defaults of a minimal file, one form for a list of one, and errors that
name the file, line and key and survive pickling. Each topic has its own file beside this one
(test_pipeline_loader_*.py)."""

from __future__ import annotations

import pickle

import pytest

from ciserver.pipeline import PipelineError, load_pipeline
from tests.support.pipelines import JOB, error_of


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


def test_a_single_string_stands_for_a_list_of_one() -> None:
    pipeline = load_pipeline(
        "on: {push: {branches: main, paths: src/**}}\nimage: x\njobs:\n  a: {script: make test}\n"
    )
    assert pipeline.on and pipeline.on.push
    assert (pipeline.on.push.branches, pipeline.on.push.paths) == (["main"], ["src/**"])
    assert pipeline.jobs["a"].script == ["make test"]


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
