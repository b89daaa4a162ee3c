"""The JSON Schema of pipelines.yml, from the same models the loader validates with, so editors
flag what the server would refuse (the loader still checks what a schema cannot: cycles, paths)."""

from __future__ import annotations

from typing import Any

from ciserver.pipeline.models import Pipeline

SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"


def pipeline_json_schema() -> dict[str, Any]:
    schema = Pipeline.model_json_schema(by_alias=True)
    # `retry: 2` is short for {max: 2}: the validator accepts both, the model's schema says one.
    retry = schema["$defs"]["Job"]["properties"]["retry"]
    retry["anyOf"] = [{"type": "integer", "minimum": 0, "maximum": 5}, *retry["anyOf"]]
    return {"$schema": SCHEMA_DIALECT, **schema, "title": "ciserver pipelines.yml"}
