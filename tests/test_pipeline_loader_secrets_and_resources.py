"""What a job's container is given and allowed: secrets, resources (memory, cpus, pids), user and
network."""

from __future__ import annotations

import pytest

from ciserver.pipeline import load_pipeline
from tests.support.pipelines import ONE_JOB, assert_job_refused


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        # secrets
        (
            "    secrets:\n      - TOKEN\n      - TOKEN\n",
            "pipelines.yml:7: jobs.a.secrets[1]: 'TOKEN' is named twice",
        ),
        ("    secrets: [1TOKEN]\n", "pipelines.yml:5: jobs.a.secrets[0]: invalid variable name '1TOKEN'"),
        # resources, user, network
        ("    resources: {memory: lots}\n", "pipelines.yml:5: jobs.a.resources.memory: invalid size 'lots'"),
        ("    resources: {memory: 0}\n", "pipelines.yml:5: jobs.a.resources.memory: must be more than 0"),
        ("    resources: {cpus: 0}\n", "pipelines.yml:5: jobs.a.resources.cpus: must be more than 0"),
        (
            "    resources: {cpus: many}\n",
            "pipelines.yml:5: jobs.a.resources.cpus: expected a number, got a string",
        ),
        ("    resources: {pids: -1}\n", "pipelines.yml:5: jobs.a.resources.pids: must be more than 0"),
        ("    resources: {pids: 1.5}\n", "pipelines.yml:5: jobs.a.resources.pids: expected a whole number"),
        (
            "    resources: {mem: 1g}\n",
            "pipelines.yml:5: jobs.a.resources.mem: unknown key (did you mean 'memory'?)",
        ),
        ("    user: --privileged\n", "pipelines.yml:5: jobs.a.user: invalid user '--privileged'"),
        ("    user: 'a b'\n", "pipelines.yml:5: jobs.a.user: invalid user 'a b'"),
        ("    user: '1:2:3'\n", "pipelines.yml:5: jobs.a.user: invalid user '1:2:3'"),
        ("    user: '1000:'\n", "pipelines.yml:5: jobs.a.user: invalid user '1000:'"),
        ("    user: ':1000'\n", "pipelines.yml:5: jobs.a.user: invalid user ':1000'"),
        ("    network: host\n", "pipelines.yml:5: jobs.a.network: must be 'default' or 'none', not 'host'"),
    ],
)
def test_bad_secrets_or_resources_are_an_error_naming_the_line_and_key(extra: str, expected: str) -> None:
    assert_job_refused(extra, expected)


@pytest.mark.parametrize(
    ("memory", "size"),
    [
        ("512m", 512 * 1024**2),
        ("2g", 2 * 1024**3),
        ("64k", 65536),
        ("1GiB", 1024**3),
        ("1000", 1000),
        ("'1 g'", 1024**3),
    ],
)
def test_a_memory_limit_is_bytes_or_a_size(memory: str, size: int) -> None:
    job = load_pipeline(ONE_JOB + f"    resources: {{memory: {memory}}}\n").jobs["a"]
    assert job.resources is not None and job.resources.memory == size
