"""`ciserver schema`: the JSON Schema editors validate pipelines.yml with agrees with the loader."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
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


def described(schema: dict[str, Any]) -> list[str]:
    """The properties, of the file and of every definition, that have no description."""
    objects = {"(top)": schema, **schema["$defs"]}
    return [
        f"{name}.{key}"
        for name, obj in objects.items()
        for key, prop in obj["properties"].items()
        if not prop.get("description")
    ]


def test_the_schema_is_titled_has_no_id_and_describes_every_key() -> None:
    schema = pipeline_json_schema()
    assert (schema["title"], "$id" in schema) == ("ciserver pipelines.yml", False)
    assert described(schema) == []
    assert "hashFiles" in schema["$defs"]["Cache"]["properties"]["key"]["description"]
    assert json.loads(json.dumps(schema)) == schema


SHORT_FORMS = """\
image: x
jobs:
  a:
    script: echo one line
    timeout: 90
    retry: 2
    only: {branches: main}
    except: {paths: docs/**}
    artifacts: {paths: dist/, expire_in: 7d}
    cache: {key: "pip-{{ hashFiles('requirements.txt') }}", paths: .cache}
    resources: {memory: 512m, cpus: 1, pids: 10}
    env: {N: 3, FLAG: true}
    matrix: {PY: ["3.10", 3.12, true]}
    needs: []
    services: [{image: db, command: "db --fast"}, {image: kv, alias: kv-1, command: [kv]}]
    user: "1000:1000"
  b:
    needs: [a]
    image_build: {build_args: {V: 1}}
    timeout: "1h30m"
    retry: {max: 1, when: [timeout]}
    resources: {memory: 1048576}
    artifacts: {paths: [a], expire_in: 3600}
"""


def test_short_forms_the_loader_accepts_validate_too(validator: Draft202012Validator) -> None:
    load_pipeline(SHORT_FORMS)
    assert list(validator.iter_errors(load_data(SHORT_FORMS))) == []


def job(**keys: Any) -> dict[str, Any]:
    return {"image": "x", "jobs": {"a": {"script": ["echo"], **keys}}}


@pytest.mark.parametrize(
    "wrong",
    [
        {"image": "x", "jobs": {"a": {"scrpit": ["echo"]}}},
        {"image": "x", "jobs": {}},
        {"image": "x", "jobs": {"a\nb": {"script": ["echo"]}}},
        {"image": "-v", "jobs": {"a": {"script": ["echo"]}}},
        {"image": "x", "env": {"1A": "b"}, "jobs": {"a": {"script": ["echo"]}}},
        job(when="sometimes"),
        job(retry=9),
        job(retry={"max": 1, "when": ["never"]}),
        job(network="host"),
        job(timeout="ten minutes"),
        job(timeout="1d"),
        job(timeout=""),
        job(allow_failure="yes"),
        job(artifacts={"paths": ["../etc"]}),
        job(artifacts={"paths": ["/etc"]}),
        job(artifacts={"paths": ["dist/../../x"]}),
        job(artifacts={"paths": []}),
        job(artifacts={"paths": ["a"], "expire_in": "soon"}),
        job(cache={"paths": ["a\\..\\.."]}),
        job(cache={"key": "k"}),
        job(secrets=["1TOKEN"]),
        job(matrix={}),
        job(matrix={"A": []}),
        job(matrix={"A-B": [1]}),
        job(user="-u"),
        job(user="a b"),
        job(user="1000:"),
        job(services=[{"image": "db", "alias": "Bad_Alias"}]),
        job(services=[{"image": "db", "aliass": "db"}]),
        job(services=[{"alias": "db"}]),
        job(resources={"memory": "lots"}),
        job(resources={"memory": 0}),
        job(resources={"cpus": "many"}),
        job(only={"branch": ["main"]}),
        job(image_build={"context": "../up"}, script=None),
    ],
)
def test_files_the_loader_refuses_are_refused_by_the_schema(
    validator: Draft202012Validator, wrong: dict[str, Any]
) -> None:
    assert list(validator.iter_errors(wrong))
    with pytest.raises(PipelineError):
        load_pipeline(yaml.safe_dump(wrong))


# Mostly forms the loader accepts, in every shape it takes them, and a few it refuses.
values = {
    "stage": st.sampled_from(["test", "x" * 101]),
    "timeout": st.sampled_from([90, "90", "10m", "1h30m", "2h", "1d"]),
    "needs": st.sampled_from([[], ["a"], ["b"]]),
    "when": st.sampled_from(["always", "manual", "on_failure"]),
    "allow_failure": st.sampled_from([True, False, "true"]),
    "only": st.sampled_from([{"branches": "main"}, {"tags": ["v*"], "paths": ["src/**"]}, {}]),
    "except": st.sampled_from([{"paths": "docs/**"}, {"branches": ["**", "!main"]}]),
    "matrix": st.sampled_from([{"A": [1, "x", True]}, {"A": [1.5], "B_2": ["y", "z"]}, {"A": []}]),
    "services": st.sampled_from(
        [[{"image": "db"}], [{"image": "x/y:1", "alias": "y-1", "command": "c 'd e'", "env": {"P": 1}}]]
    ),
    "artifacts": st.sampled_from([{"paths": "dist/"}, {"paths": ["a", "./b/*.xml"], "expire_in": "7d"}]),
    "cache": st.sampled_from([{"paths": ["c"], "key": 'k-{{ hashFiles("a", "b/**") }}'}, {"paths": "c"}]),
    "secrets": st.sampled_from([["A"], ["A", "_B"], ["A", "A"]]),
    "resources": st.sampled_from([{"memory": "1g"}, {"memory": 10, "cpus": 0.5}, {"pids": 3, "cpus": 2}]),
    "user": st.sampled_from(["nobody", "1000:1000", "www-data:staff"]),
    "network": st.sampled_from(["none", "default"]),
    "retry": st.sampled_from([0, 5, {"max": 2}, {"max": 2, "when": ["timeout", "always"]}]),
}
jobs = st.one_of(
    st.fixed_dictionaries({"script": st.sampled_from(["echo", ["a", "b"]])}, optional=values),
    st.fixed_dictionaries(
        {"image_build": st.sampled_from([{}, {"context": "app", "dockerfile": "x/D", "target": "t"}])},
        optional=values,
    ),
)


@settings(max_examples=500, deadline=None)
@given(st.dictionaries(st.sampled_from(["a", "b"]), jobs, min_size=1))
def test_every_file_the_loader_accepts_the_schema_accepts(
    validator: Draft202012Validator, document: dict[str, Any]
) -> None:
    text = yaml.safe_dump({"image": "x", "jobs": document})
    try:
        load_pipeline(text)
    except PipelineError:
        return
    assert [error.message for error in validator.iter_errors(load_data(text))] == []
