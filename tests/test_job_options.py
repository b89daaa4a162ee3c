"""A job's options as its row keeps them: what a build queued before an upgrade stored reads back
and is stored again unchanged, and a row that does not read back is an error naming the key."""

from __future__ import annotations

import json

import pytest

from ciserver.pipeline import JobOptions, OptionsError, Resources, Retry

# As this and earlier versions store them (keys absent when unset, network only when "none").
STORED = [
    {},
    {"network": "none"},
    {"retry": {"max": 0, "when": ["always"]}},
    {
        "services": [
            {"image": "reg:5000/team/db:15", "alias": "db", "env": {"P": "1"}, "command": ["db", "--fast"]},
            {"image": "cache", "alias": "kv", "env": {}},
        ],
        "artifacts": {"paths": ["dist/"], "expire_in": 86400},
        "cache": {"key": "pip-{{ hashFiles('req.txt') }}", "paths": [".cache"]},
        "secrets": ["TOKEN"],
        "resources": {"memory": 1024**3, "cpus": 0.5, "pids": 50},
        "user": "nobody",
        "retry": {"max": 1, "when": ["always"]},
        "environment": "production",
    },
    {
        "image_build": {
            "context": "app",
            "dockerfile": "Dockerfile",
            "target": "prod",
            "build_args": {"V": "2"},
        },
        "resources": {"cpus": 2.0},
        "retry": {"max": 2, "when": ["runner_failure"]},
        "network": "none",
    },
]


@pytest.mark.parametrize("stored", STORED)
def test_stored_options_read_back_and_are_stored_again_unchanged(stored: dict[str, object]) -> None:
    assert json.dumps(JobOptions.from_stored(stored).stored()) == json.dumps(stored)


def test_a_row_without_options_reads_as_the_defaults() -> None:
    options = JobOptions.from_stored({})
    assert (options.services, options.secrets, options.resources) == ([], [], Resources())
    assert (options.artifacts, options.cache, options.image_build, options.retry) == (None, None, None, None)
    assert (options.user, options.environment, options.network) == (None, None, "default")


@pytest.mark.parametrize(
    ("stored", "named"),
    [
        (
            {"retry": {"max": 9, "when": ["always"]}},
            "options.retry.max: Input should be less than or equal to 5",
        ),
        ({"servics": []}, "options.servics: Extra inputs are not permitted"),
        ({"services": [{"image": "db", "alias": "Db", "env": {}}]}, "options.services[0].alias: alias 'Db'"),
        ({"resources": {"memory": "lots"}}, "options.resources.memory: invalid size 'lots'"),
        ({"network": "host"}, "options.network: Input should be 'default' or 'none'"),
        ([], "options: Input should be a valid dictionary"),
    ],
)
def test_options_that_do_not_read_back_are_an_error_naming_the_key(stored: object, named: str) -> None:
    with pytest.raises(OptionsError) as raised:
        JobOptions.from_stored(stored)
    assert str(raised.value).startswith(f"the job's stored options cannot be read: {named}")


def test_an_empty_retry_when_counts_as_always() -> None:
    assert Retry(max=1, when=[]).covers("script_failure")
    assert Retry(max=1, when=["always"]).covers("timeout")
    assert not Retry(max=1, when=["timeout"]).covers("script_failure")
