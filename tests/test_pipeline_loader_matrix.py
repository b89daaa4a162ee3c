"""matrix: its values stay strings, and a matrix too large, empty, repeated or making a bad variant name
is refused at its line."""

from __future__ import annotations

import pytest

from ciserver.pipeline import load_pipeline
from tests.support.pipelines import ONE_JOB, assert_job_refused


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        (
            "    matrix: {A: [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11], B: [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]}\n",
            "pipelines.yml:5: jobs.a.matrix: 110 combinations, over the limit of 100",
        ),
        (
            "    matrix:\n      A: [x, y]\n      B:\n        - 1\n        - '1'\n",
            "pipelines.yml:9: jobs.a.matrix.B[1]: '1' is listed twice",
        ),
        ("    matrix: {}\n", "pipelines.yml:5: jobs.a.matrix: must not be empty"),
        ("    matrix: {A: []}\n", "pipelines.yml:5: jobs.a.matrix.A: must not be empty"),
        ("    matrix: {1A: [x]}\n", "pipelines.yml:5: jobs.a.matrix.1A: invalid variable name '1A'"),
        (
            "    matrix: {A: [[x]]}\n",
            "pipelines.yml:5: jobs.a.matrix.A[0]: expected a string, number or boolean",
        ),
        (
            "    matrix: {A: ['" + "x" * 95 + "']}\n",
            "pipelines.yml:5: jobs.a.matrix: the variant name 'a [A=xxx",
        ),
        (
            "    matrix: {A: ['x\\ty']}\n".replace("'", '"'),
            "pipelines.yml:5: jobs.a.matrix: the variant name 'a [A=x\\ty]' has a tab",
        ),
        (
            "    matrix: {A: [1]}\n  'a [A=1]': {script: [x]}\n",
            "pipelines.yml:5: jobs.a.matrix: the variant name 'a [A=1]' is already taken by another job",
        ),
    ],
)
def test_a_bad_matrix_is_an_error_naming_its_line_and_key(extra: str, expected: str) -> None:
    assert_job_refused(extra, expected)


def test_env_values_and_matrix_values_stay_strings() -> None:
    job = load_pipeline(ONE_JOB + "    matrix: {V: [010, 1.5, false, '3.10', x y]}\n").jobs["a"]
    assert job.matrix == {"V": ["10", "1.5", "false", "3.10", "x y"]}
