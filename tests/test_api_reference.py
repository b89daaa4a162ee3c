"""docs/API.md is what ciserver.api.reference makes from the OpenAPI document now, and the role that
document gives each route is the one the server enforces: a token one role below is refused."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from ciserver.api.reference import api_reference
from ciserver.app import create_app
from ciserver.config import Settings
from ciserver.store.models import Role
from tests.support.store import bearer

PAGE = Path(__file__).resolve().parent.parent / "docs" / "API.md"


@pytest.fixture
def settings(tmp_path: Path, redis_url: str) -> Settings:
    return Settings(data_dir=tmp_path, redis_url=redis_url)


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings, outbox=False)) as client:
        yield client


def test_the_committed_page_is_what_the_generator_makes_now(client: TestClient) -> None:
    openapi = client.app.openapi()  # type: ignore[attr-defined]
    assert PAGE.read_text() == api_reference(openapi), (
        "docs/API.md is out of date: run `python -m ciserver.api.reference > docs/API.md`"
    )
    for path, operations in openapi["paths"].items():
        for method in operations:
            assert f"| {method.upper()} | `{path}` |" in PAGE.read_text()


def _secured(openapi: dict[str, Any]) -> Iterator[tuple[str, str, Role]]:
    for path, operations in openapi["paths"].items():
        for method, operation in operations.items():
            for requirement in operation.get("security", []):
                for role in requirement.get("HTTPBearer", []):
                    yield method.upper(), path, Role[role]


def test_every_route_refuses_the_role_below_the_one_its_page_names(
    client: TestClient, settings: Settings
) -> None:
    openapi = client.app.openapi()  # type: ignore[attr-defined]
    secured = list(_secured(openapi))
    assert len(secured) > 30
    for method, path, role in secured:
        url = re.sub(r"\{(\w+)\}", lambda m: "o/r" if m.group(1) == "name" else "1", path)
        anonymous = client.request(method, url)
        assert anonymous.status_code == 401, (method, path, anonymous.text)
        if role > Role.viewer:
            below = client.request(method, url, headers=bearer(settings, Role(role - 1)))
            assert below.status_code == 403, (method, path, below.text)
            assert f"needs the {role.name} role" in below.json()["detail"]
