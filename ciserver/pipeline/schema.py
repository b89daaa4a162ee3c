"""The JSON Schema of pipelines.yml, from the same models the loader validates with, so editors
flag what the server would refuse. The loader still checks what a schema cannot say: needs that
name no job or make a cycle, a job's stage among `stages`, matrix sizes, repeated names.

Validate the data as YAML 1.2 reads the file (`on:` is the key "on", not true), which is what
editors' YAML language servers do, and what `ciserver.pipeline.loader.load_data` returns.
"""

from __future__ import annotations

from typing import Any

from ciserver.pipeline.models import Pipeline

SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"


def pipeline_json_schema() -> dict[str, Any]:
    """Draft 2020-12, without $id (it is served and saved in different places), titled for editors."""
    schema = Pipeline.model_json_schema(by_alias=True, mode="validation")
    return {"$schema": SCHEMA_DIALECT, "title": "ciserver pipelines.yml", **_without_title(schema)}


def _without_title(schema: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in schema.items() if key != "title"}
