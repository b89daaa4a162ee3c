"""docs/PIPELINE.md is what `ciserver schema --markdown` makes from the pipeline's JSON Schema now, so
the reference cannot fall behind the models the loader validates with."""

from __future__ import annotations

import re
from pathlib import Path

from typer.testing import CliRunner

from ciserver.cli import app
from ciserver.pipeline.reference import pipeline_reference
from ciserver.pipeline.schema import pipeline_json_schema

PAGE = Path(__file__).resolve().parent.parent / "docs" / "PIPELINE.md"


def test_the_committed_page_is_what_the_generator_makes_now() -> None:
    made = CliRunner().invoke(app, ["schema", "--markdown"])
    assert made.exit_code == 0, made.output
    assert made.output == pipeline_reference()
    assert PAGE.read_text() == made.output, (
        "docs/PIPELINE.md is out of date: run `ciserver schema --markdown > docs/PIPELINE.md`"
    )


def test_every_key_of_every_object_in_the_schema_has_its_row() -> None:
    schema = pipeline_json_schema()
    page = pipeline_reference()
    sections = {"The top level": schema, **schema["$defs"]}
    for title, definition in sections.items():
        body = page.split(f"\n## {title}\n", 1)[1].split("\n## ", 1)[0]
        for key in definition.get("properties", {}):
            assert re.search(rf"^\| `{re.escape(key)}`", body, re.MULTILINE), (title, key)


def test_links_between_sections_lead_to_a_section() -> None:
    page = pipeline_reference()
    anchors = {title.lower().replace(" ", "-") for title in re.findall(r"^## (.+)$", page, re.MULTILINE)}
    for target in re.findall(r"\]\(#([^)]+)\)", page):
        assert target in anchors, target
