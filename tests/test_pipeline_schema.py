"""`ciserver schema`: the JSON Schema editors validate pipelines.yml with agrees with the loader."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from jsonschema import Draft202012Validator

from ciserver.pipeline import PipelineError, load_pipeline
from ciserver.pipeline.loader import load_data
from ciserver.pipeline.schema import pipeline_json_schema

EXAMPLE = Path(__file__).resolve().parent.parent / "pipelines.example.yml"


@pytest.fixture(scope="module")
def validator() -> Draft202012Validator:
    schema = pipeline_json_schema()
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema)


def test_the_cli_prints_a_draft_2020_12_schema() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "ciserver", "schema"], capture_output=True, text=True, check=True
    ).stdout
    schema = json.loads(out)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert {"needs", "matrix", "services", "artifacts", "cache", "secrets", "image_build", "retry"} <= set(
        schema["$defs"]["Job"]["properties"]
    )
    assert "except" in schema["$defs"]["Job"]["properties"]


def test_the_example_file_loads_and_validates(validator: Draft202012Validator) -> None:
    text = EXAMPLE.read_text()
    load_pipeline(text)
    assert list(validator.iter_errors(load_data(text))) == []


SHORT_FORMS = """\
image: x
jobs:
  a:
    script: echo one line
    timeout: 90
    retry: 2
    only: {branches: main}
    artifacts: {paths: dist/, expire_in: 7d}
    resources: {memory: 512m}
    env: {N: 3, FLAG: true}
"""


def test_short_forms_the_loader_accepts_validate_too(validator: Draft202012Validator) -> None:
    load_pipeline(SHORT_FORMS)
    assert list(validator.iter_errors(load_data(SHORT_FORMS))) == []


@pytest.mark.parametrize(
    "wrong",
    [
        {"image": "x", "jobs": {"a": {"scrpit": ["echo"]}}},
        {"image": "x", "jobs": {"a": {"script": ["echo"], "when": "sometimes"}}},
        {"image": "x", "jobs": {"a": {"script": ["echo"], "retry": 9}}},
        {"image": "x", "jobs": {"a": {"script": ["echo"], "network": "host"}}},
        {"image": "x", "jobs": {"a": {"script": ["echo"], "timeout": "ten minutes"}}},
    ],
)
def test_files_the_loader_refuses_are_refused_by_the_schema(
    validator: Draft202012Validator, wrong: dict[str, Any]
) -> None:
    assert list(validator.iter_errors(wrong))
    with pytest.raises(PipelineError):
        load_pipeline(yaml.safe_dump(wrong))
