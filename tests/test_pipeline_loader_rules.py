"""on:, only: and except:, the rules that pick the pushes and jobs built: what may be left out, and
the errors that name the line and key."""

from __future__ import annotations

import pytest

from ciserver.pipeline import Pipeline, load_pipeline
from tests.support.pipelines import JOB, assert_job_refused


@pytest.mark.parametrize("on", ["", "on:\n", "on: {}\n", "on: {push: }\n", "on: {push: {}}\n"])
def test_on_may_be_absent_or_empty(on: str) -> None:
    assert isinstance(load_pipeline(on + "image: x\n" + JOB), Pipeline)


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
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
    ],
)
def test_a_bad_only_or_except_is_an_error_naming_its_line_and_key(extra: str, expected: str) -> None:
    assert_job_refused(extra, expected)
