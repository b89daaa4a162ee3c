"""needs: the job graph, refused at the entry to change when it names no job, itself, a later stage or
a cycle; long chains load."""

from __future__ import annotations

import pytest

from ciserver.pipeline import load_pipeline
from tests.support.pipelines import assert_job_refused, error_of


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ("    needs: [nope]\n", "pipelines.yml:5: jobs.a.needs[0]: no job is named 'nope'"),
        ("    needs: [a]\n", "pipelines.yml:5: jobs.a.needs[0]: 'a' needs itself"),
        ("    needs: [style, a]\n", "pipelines.yml:5: jobs.a.needs[0]: no job is named 'style'"),
        (
            "  b: {script: [x]}\n  c:\n    script: [x]\n    needs:\n      - b\n      - b\n",
            "pipelines.yml:10: jobs.c.needs[1]: 'b' is named twice",
        ),
        ("    needs: a\n", "pipelines.yml:5: jobs.a.needs: expected a list, got a string"),
    ],
)
def test_a_bad_needs_entry_is_an_error_naming_its_line_and_key(extra: str, expected: str) -> None:
    assert_job_refused(extra, expected)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "image: x\njobs:\n  a: {script: [x], needs: [b]}\n  b: {script: [x], needs: [c]}\n"
            "  c:\n    script: [x]\n    needs:\n      - a\n",
            "pipelines.yml:8: jobs.c.needs[0]: a cycle: a -> b -> c -> a",
        ),
        (
            "image: x\nstages: [test, build]\njobs:\n  a:\n    stage: test\n    script: [x]\n    needs: [b]\n"
            "  b: {stage: build, script: [x]}\n",
            "pipelines.yml:7: jobs.a.needs[0]: 'b' is in the later stage 'build': "
            "need jobs of stage 'test' or before",
        ),
        (
            "jobs:\n  a: {image_build: {}, needs: [b]}\n  b: {image: x, script: [x], needs: [a]}\n",
            "pipelines.yml:3: jobs.b.needs[0]: a cycle: a -> b -> a",
        ),
        (
            "image: x\njobs:\n  a:\n    image: y\n",
            "pipelines.yml:3: jobs.a: the job needs a script (or an image_build)",
        ),
    ],
)
def test_a_bad_job_graph_is_an_error_at_the_entry_to_change(text: str, expected: str) -> None:
    assert str(error_of(text)) == expected


def test_a_long_chain_of_needs_loads_and_a_cycle_at_its_end_is_found() -> None:
    jobs = "".join(f"  j{n}: {{script: [x], needs: [j{n - 1}]}}\n" for n in range(1, 5000))
    pipeline = load_pipeline("image: x\njobs:\n  j0: {script: [x]}\n" + jobs)
    assert pipeline.jobs["j4999"].needs == ["j4998"]
    error = error_of("image: x\njobs:\n  j0: {script: [x], needs: [j4999]}\n" + jobs)
    assert (error.line, error.key) == (4, "jobs.j1.needs[0]")
    shortened = "j0 -> j4999 -> j4998 -> j4997 -> ... -> j3 -> j2 -> j1 -> j0"
    assert error.message == f"a cycle of 5000 jobs: {shortened}"
