"""Fixtures shared by the fast and the end-to-end tests: a real redis-server for the whole run."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.services import RedisServer


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A private redis-server for the whole run."""
    redis = RedisServer(tmp_path_factory.mktemp("redis")).start()
    try:
        yield redis.url
    finally:
        redis.stop()
