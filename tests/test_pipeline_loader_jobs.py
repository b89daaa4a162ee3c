"""A job's own keys: timeout, image, when, allow_failure, image_build and retry, every key in its
documented forms, and the errors that name the line and key to change."""

from __future__ import annotations

import pytest

from ciserver.pipeline import Retry, load_pipeline
from tests.support.pipelines import JOB, assert_job_refused, error_of


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("90", 90),
        ("'90'", 90),
        ("90s", 90),
        ("10m", 600),
        ("1h30m", 5400),
        ("2h", 7200),
        ("1h1m1s", 3661),
        ("720h", 30 * 24 * 3600),
    ],
)
def test_a_timeout_is_seconds_or_a_duration(value: str, seconds: int) -> None:
    pipeline = load_pipeline(f"image: x\njobs:\n  a:\n    script: [x]\n    timeout: {value}\n")
    assert pipeline.jobs["a"].timeout == seconds


@pytest.mark.parametrize("value", ["ten minutes", "1m30h", "10 m", "h", "1.5h", "10M", "-10s", "1d"])
def test_a_timeout_in_another_form_is_refused(value: str) -> None:
    text = f"image: x\njobs:\n  a:\n    script: [x]\n    timeout: '{value}'\n"
    assert error_of(text).message.startswith(f"invalid duration {value!r}")


def test_image_names_with_registries_tags_and_digests_are_accepted() -> None:
    for image in ["ciserver-test/python:3.11", "localhost:5000/team/app:1.2", "busybox@sha256:" + "a" * 64]:
        assert load_pipeline(f"image: {image}\n" + JOB).image == image


NEW_KEYS = """\
image: ciserver-test/python:3.11
stages: [test, build]
jobs:
  unit:
    script: [pytest]
    needs: []
    when: always
    allow_failure: true
    only: {branches: main, tags: ["v*"], paths: ["src/**"]}
    except: {branches: ["wip/*"]}
    matrix: {PYTHON: ["3.10", 3.12], DEBUG: [true]}
    services:
      - image: ciserver-test/busybox:latest
      - image: localhost:5000/team/postgres:15
        env: {POSTGRES_PASSWORD: x}
        command: postgres -c 'fsync=off'
      - image: redis@sha256:0123
        alias: cache-1
        command: [redis-server, --save, ""]
    artifacts: {paths: reports/, expire_in: 12h}
    cache: {paths: [.cache/pip, .venv]}
    secrets: [PYPI_TOKEN, _OTHER]
    resources: {memory: 1GiB, cpus: 2, pids: 100}
    user: nobody
    network: default
    retry: 2
  build:
    stage: build
    needs: [unit]
    image_build: {build_args: {VERSION: 1.5}}
    resources: {memory: 536870912}
    user: "1000:1000"
    network: none
    retry: {max: 0, when: [script_failure, timeout]}
"""


def test_every_new_key_loads_in_its_documented_forms() -> None:
    jobs = load_pipeline(NEW_KEYS).jobs
    unit, build = jobs["unit"], jobs["build"]
    assert (unit.needs, build.needs) == ([], ["unit"])
    assert (unit.when, unit.allow_failure, build.when, build.allow_failure) == (
        "always",
        True,
        "on_success",
        False,
    )
    assert unit.only is not None and unit.except_ is not None
    assert (unit.only.branches, unit.only.tags, unit.only.paths) == (["main"], ["v*"], ["src/**"])
    assert unit.except_.branches == ["wip/*"]
    assert unit.matrix == {"PYTHON": ["3.10", "3.12"], "DEBUG": ["true"]}
    assert [(s.alias, s.command) for s in unit.services] == [
        ("busybox", None),
        ("postgres", ["postgres", "-c", "fsync=off"]),
        ("cache-1", ["redis-server", "--save", ""]),
    ]
    assert unit.services[1].env == {"POSTGRES_PASSWORD": "x"}
    assert unit.artifacts is not None and (unit.artifacts.paths, unit.artifacts.expire_in) == (
        ["reports/"],
        43200,
    )
    assert unit.cache is not None and (unit.cache.key, unit.cache.paths) == (
        "default",
        [".cache/pip", ".venv"],
    )
    assert unit.secrets == ["PYPI_TOKEN", "_OTHER"]
    assert unit.resources is not None
    assert (unit.resources.memory, unit.resources.cpus, unit.resources.pids) == (1024**3, 2.0, 100)
    assert (unit.user, unit.network, build.user, build.network) == ("nobody", "default", "1000:1000", "none")
    assert unit.retry == Retry(max=2, when=["always"])
    assert build.retry == Retry(max=0, when=["script_failure", "timeout"])
    assert build.script is None and build.image_build is not None
    assert (build.image_build.context, build.image_build.dockerfile, build.image_build.target) == (
        ".",
        "Dockerfile",
        None,
    )
    assert build.image_build.build_args == {"VERSION": "1.5"}
    assert build.resources is not None and build.resources.memory == 512 * 1024**2


def test_an_image_build_job_needs_no_image_and_no_script() -> None:
    pipeline = load_pipeline("jobs:\n  package:\n    image_build: {context: app, target: runtime}\n")
    build = pipeline.jobs["package"].image_build
    assert build is not None
    assert (build.context, build.dockerfile, build.target) == ("app", "Dockerfile", "runtime")


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        # when, allow_failure
        (
            "    when: later\n",
            "pipelines.yml:5: jobs.a.when: must be 'on_success', 'on_failure', 'always' or 'manual', "
            "not 'later'",
        ),
        (
            "    allow_failure: yes\n",
            "pipelines.yml:5: jobs.a.allow_failure: expected true or false, got a string",
        ),
        # image_build
        (
            "    image_build: {}\n",
            "pipelines.yml:5: jobs.a.image_build: the job has both a script and an image_build",
        ),
        ("    image_build: {context: ../up}\n", "pipelines.yml:5: jobs.a.image_build.context: '../up' must"),
        (
            "    image_build: {dockerfile: /Dockerfile}\n",
            "pipelines.yml:5: jobs.a.image_build.dockerfile: '/Dock",
        ),
        (
            "    image_build: {build_args: {1X: y}}\n",
            "pipelines.yml:5: jobs.a.image_build.build_args.1X: invalid",
        ),
        (
            "    image_build: {dockerfle: D}\n",
            "pipelines.yml:5: jobs.a.image_build.dockerfle: unknown key (did you",
        ),
        # retry
        ("    retry: 9\n", "pipelines.yml:5: jobs.a.retry: must be at most 5, not 9"),
        ("    retry: -1\n", "pipelines.yml:5: jobs.a.retry: must be at least 0, not -1"),
        ("    retry: true\n", "pipelines.yml:5: jobs.a.retry: expected a mapping, got true/false"),
        (
            "    retry: {max: 1, when: [sometimes]}\n",
            "pipelines.yml:5: jobs.a.retry.when[0]: must be 'always', ",
        ),
        ("    retry: {when: [timeout]}\n", "pipelines.yml:5: jobs.a.retry.max: required key is missing"),
        ("    retry: {max: 1, on: [timeout]}\n", "pipelines.yml:5: jobs.a.retry.on: unknown key"),
    ],
)
def test_a_bad_job_key_is_an_error_naming_its_line_and_key(extra: str, expected: str) -> None:
    assert_job_refused(extra, expected)
