"""services: a job's service containers, refused at the line and key to change."""

from __future__ import annotations

import pytest

from tests.support.pipelines import assert_job_refused


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        (
            "    network: none\n    services: [{image: db}]\n",
            "pipelines.yml:5: jobs.a.network: network: none leaves no way to reach its services",
        ),
        (
            "    services: [{image: db, alias: Not_A_Host}]\n",
            "pipelines.yml:5: jobs.a.services[0].alias: alias 'Not_A_Host' must be a host name",
        ),
        (
            "    services:\n      - image: my_db\n",
            "pipelines.yml:6: jobs.a.services[0]: alias 'my_db' (from the image name; set `alias`) "
            "must be a host name",
        ),
        (
            "    services:\n      - image: db\n      - image: other/db:2\n",
            "pipelines.yml:7: jobs.a.services[1]: alias 'db' is taken by an earlier service",
        ),
        (
            "    services: [{image: db, command: 'sh -c \"unclosed'}]\n",
            "pipelines.yml:5: jobs.a.services[0].command: cannot split",
        ),
        (
            "    services: [{image: db, command: []}]\n",
            "pipelines.yml:5: jobs.a.services[0].command: must not be",
        ),
        (
            "    services: [{alias: db}]\n",
            "pipelines.yml:5: jobs.a.services[0].image: required key is missing",
        ),
        (
            "    services: [{image: db, port: 5432}]\n",
            "pipelines.yml:5: jobs.a.services[0].port: unknown key",
        ),
        ("    services: [{image: -v}]\n", "pipelines.yml:5: jobs.a.services[0].image: invalid image '-v'"),
    ],
)
def test_a_bad_service_is_an_error_naming_its_line_and_key(extra: str, expected: str) -> None:
    assert_job_refused(extra, expected)
