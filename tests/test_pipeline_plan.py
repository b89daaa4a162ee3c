"""Which pushes are built, and the order and settings of the planned jobs."""

from __future__ import annotations

import pytest

from ciserver.pipeline import load_pipeline, plan_jobs, push_skip_reason

PIPELINE = """\
image: base
env: {A: top, B: 1}
stages: [lint, test, build, deploy]
jobs:
  style: {stage: lint, script: [a]}
  unit: {stage: test, script: [b], env: {A: job}, timeout: 2m}
  integration: {stage: test, script: [c], image: other}
  package: {stage: build, script: [d]}
"""


def test_jobs_are_planned_in_stage_order_each_after_the_stage_before() -> None:
    plan = plan_jobs(load_pipeline(PIPELINE), default_timeout=1234)
    assert [(j.name, j.stage, j.after) for j in plan] == [
        ("style", "lint", ()),
        ("unit", "test", ("style",)),
        ("integration", "test", ("style",)),
        ("package", "build", ("unit", "integration")),
    ]


def test_job_settings_fall_back_to_the_top_level() -> None:
    unit, integration = plan_jobs(load_pipeline(PIPELINE), default_timeout=1234)[1:3]
    assert (unit.image, unit.env, unit.timeout) == ("base", {"A": "job", "B": "1"}, 120)
    assert (integration.image, integration.env, integration.timeout) == (
        "other",
        {"A": "top", "B": "1"},
        1234,
    )


def test_jobs_without_a_stage_go_to_the_first_and_empty_stages_are_passed_over() -> None:
    plan = plan_jobs(
        load_pipeline(
            "image: x\nstages: [one, two, three]\n"
            "jobs:\n  a: {script: [x]}\n  c: {stage: three, script: [x]}\n"
        )
    )
    assert [(j.name, j.stage, j.after) for j in plan] == [("a", "one", ()), ("c", "three", ("a",))]


def filtered(on: str) -> str:
    return f"on:\n  push:\n{on}image: x\njobs:\n  a: {{script: [x]}}\n"


@pytest.mark.parametrize(
    ("on", "branch", "tag", "files", "skipped"),
    [
        ("", "anything", None, None, False),
        ("    branches: [main, 'release/*']\n", "main", None, None, False),
        ("    branches: [main, 'release/*']\n", "release/1.0", None, None, False),
        ("    branches: [main, 'release/*']\n", "release/1.0/hotfix", None, None, True),
        ("    branches: ['release/**']\n", "release/1.0/hotfix", None, None, False),
        ("    branches: [main]\n", "dev", None, None, True),
        ("    branches: [main]\n", None, "v1.0", None, True),
        ("    tags: ['v*']\n", None, "v1.0", None, False),
        ("    tags: ['v*']\n", None, "nightly", None, True),
        ("    tags: ['v*']\n", "main", None, None, True),
        ("    paths: ['src/**']\n", "main", None, ["src/a/b.py"], False),
        ("    paths: ['src/**']\n", "main", None, ["docs/x.md"], True),
        ("    paths: ['src/**']\n", "main", None, None, False),
        ("    paths_ignore: ['docs/**', '**/*.md']\n", "main", None, ["docs/a.txt", "README.md"], True),
        ("    paths_ignore: ['docs/**']\n", "main", None, ["docs/a.txt", "src/x.py"], False),
    ],
)
def test_push_filters_decide_which_pushes_are_built(
    on: str, branch: str | None, tag: str | None, files: list[str] | None, skipped: bool
) -> None:
    text = filtered(on) if on else "image: x\njobs:\n  a: {script: [x]}\n"
    reason = push_skip_reason(load_pipeline(text), branch=branch, tag=tag, changed_files=files)
    assert (reason is not None) == skipped, reason


def test_a_skip_reason_names_the_branch_and_the_filter() -> None:
    reason = push_skip_reason(
        load_pipeline(filtered("    branches: [main]\n")), branch="dev", tag=None, changed_files=None
    )
    assert reason == "branch 'dev' is not in on.push.branches [main]"
