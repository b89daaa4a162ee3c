"""artifacts: and cache: paths that stay inside the workspace, how long artifacts are kept, and cache
keys split into text and hashFiles calls for the worker."""

from __future__ import annotations

import json

import pytest

from ciserver.pipeline import HashFiles, cache_key_parts, load_pipeline
from tests.support.pipelines import ONE_JOB, assert_job_refused, error_of


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        (
            "    artifacts: {paths: [../etc]}\n",
            "pipelines.yml:5: jobs.a.artifacts.paths[0]: '../etc' must be a relative path "
            "that stays inside the workspace",
        ),
        (
            "    artifacts: {paths: [/etc/passwd]}\n",
            "pipelines.yml:5: jobs.a.artifacts.paths[0]: '/etc/passwd' must",
        ),
        (
            "    artifacts:\n      paths:\n        - dist\n        - dist/../..\n",
            "pipelines.yml:8: jobs.a.artifacts.paths[1]: 'dist/../..' must be a relative path",
        ),
        (
            "    artifacts: {paths: ['']}\n",
            "pipelines.yml:5: jobs.a.artifacts.paths[0]: '' must be a relative",
        ),
        ('    artifacts: {paths: ["a\\0b"]}\n', "pipelines.yml:5: jobs.a.artifacts.paths[0]: 'a\\x00b' must"),
        ("    artifacts: {paths: []}\n", "pipelines.yml:5: jobs.a.artifacts.paths: must not be empty"),
        (
            "    artifacts: {expire_in: 7d}\n",
            "pipelines.yml:5: jobs.a.artifacts.paths: required key is missing",
        ),
        (
            "    artifacts: {paths: [a], expire_in: soon}\n",
            "pipelines.yml:5: jobs.a.artifacts.expire_in: invalid duration 'soon'",
        ),
        (
            "    artifacts: {paths: [a], expire_in: 0}\n",
            "pipelines.yml:5: jobs.a.artifacts.expire_in: must be more",
        ),
        (
            "    artifacts: {path: [a]}\n",
            "pipelines.yml:5: jobs.a.artifacts.path: unknown key (did you mean 'paths'?)",
        ),
        ("    cache: {paths: [a/../../b]}\n", "pipelines.yml:5: jobs.a.cache.paths[0]: 'a/../../b' must"),
        (
            "    cache: {key: '{{ env.X }}', paths: [c]}\n",
            "pipelines.yml:5: jobs.a.cache.key: {{ env.X }} is not",
        ),
        (
            "    cache: {key: '{{ hashFiles(a.txt) }}', paths: [c]}\n",
            "pipelines.yml:5: jobs.a.cache.key: hashFiles takes quoted paths",
        ),
        (
            "    cache: {key: \"{{ hashFiles('/etc/passwd') }}\", paths: [c]}\n",
            "pipelines.yml:5: jobs.a.cache.key: '/etc/passwd' must be a relative path",
        ),
        ("    cache: {key: 'pip-{{', paths: [c]}\n", "pipelines.yml:5: jobs.a.cache.key: unbalanced"),
        (
            "    cache: {kye: x, paths: [c]}\n",
            "pipelines.yml:5: jobs.a.cache.kye: unknown key (did you mean 'key'?)",
        ),
    ],
)
def test_bad_artifacts_or_cache_are_an_error_naming_the_line_and_key(extra: str, expected: str) -> None:
    assert_job_refused(extra, expected)


def test_artifacts_are_kept_thirty_days_unless_told() -> None:
    job = load_pipeline(ONE_JOB + "    artifacts: {paths: [dist/*.whl]}\n").jobs["a"]
    assert job.artifacts is not None and job.artifacts.expire_in == 30 * 24 * 3600
    for value, seconds in [("7d", 7 * 86400), ("1d12h", 36 * 3600), (90, 90), ("'3600'", 3600)]:
        job = load_pipeline(ONE_JOB + f"    artifacts: {{paths: [a], expire_in: {value}}}\n").jobs["a"]
        assert job.artifacts is not None and job.artifacts.expire_in == seconds


def test_paths_inside_the_workspace_are_accepted() -> None:
    paths = ["dist/*.whl", "reports/", ".", "./build", "a..b", "..hidden", "**/*.xml"]
    job = load_pipeline(ONE_JOB + f"    artifacts: {{paths: {paths}}}\n    cache: {{paths: {paths}}}\n").jobs[
        "a"
    ]
    assert job.artifacts is not None and job.artifacts.paths == paths
    assert job.cache is not None and job.cache.paths == paths


@pytest.mark.parametrize(
    ("template", "parts"),
    [
        ("default", ["default"]),
        ("pip-{{ hashFiles('requirements.txt') }}", ["pip-", HashFiles(("requirements.txt",))]),
        (
            "{{hashFiles('a.txt', \"src/**/*.lock\")}}-v2",
            [HashFiles(("a.txt", "src/**/*.lock")), "-v2"],
        ),
        (
            "x{{ hashFiles('a') }}{{ hashFiles( 'b' , 'c' ) }}",
            ["x", HashFiles(("a",)), HashFiles(("b", "c"))],
        ),
        ("{ single braces }", ["{ single braces }"]),
    ],
)
def test_a_cache_key_splits_into_text_and_hashfiles_calls_for_the_worker(
    template: str, parts: list[object]
) -> None:
    assert cache_key_parts(template) == parts
    assert (
        load_pipeline(ONE_JOB + f"    cache: {{key: {json.dumps(template)}, paths: [c]}}\n").jobs["a"].cache
    )


@pytest.mark.parametrize(
    "template",
    [
        "{{ env.HOME }}",
        "{{ hashFiles() }}",
        "{{ hashFiles('a',) }}",
        "{{ hashFiles('a' 'b') }}",
        "{{ hashFiles('../a') }}",
        "{{ hashFiles('') }}",
        "{{ hashFiles('a') }",
        "a }} b",
        "{{ hashFiles('a') }} {{ hashfiles('b') }}",
    ],
)
def test_a_cache_key_with_anything_else_in_braces_is_refused(template: str) -> None:
    with pytest.raises(ValueError):
        cache_key_parts(template)
    error = error_of(ONE_JOB + f"    cache: {{key: {json.dumps(template)}, paths: [c]}}\n")
    assert (error.line, error.key) == (5, "jobs.a.cache.key")
