"""YAML as the loader reads it: one mapping, at most 256 KiB, no alias bombs or deep nesting, anchors
and merge keys kept, scalars read as YAML 1.2 reads them."""

from __future__ import annotations

import pytest

from ciserver.pipeline import load_pipeline
from ciserver.pipeline.loader import MAX_BYTES
from tests.support.pipelines import JOB, error_of


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
