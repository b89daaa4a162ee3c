"""The names a shared-URL webhook may be for, found in its raw bytes: every real payload's repository is
found, text inside strings never is, and no body makes the scan raise or return more than a few."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ciserver.forges import FORGES
from ciserver.forges.scan import MAX_CANDIDATES, MAX_PLACES, string_values
from tests.test_forge_github import REAL_PAYLOADS as REAL_GITHUB
from tests.test_forge_gitlab import REAL_PAYLOADS as REAL_GITLAB

FIXTURES = Path(__file__).parent / "fixtures"


def payload_files() -> list[tuple[str, Path]]:
    found = [
        (forge, path)
        for forge, directory in (("github", REAL_GITHUB), ("gitlab", REAL_GITLAB))
        for path in sorted(directory.rglob("*.json"))
        if path.name != "headers.json"
    ]
    found += [(path.parent.name, path) for path in sorted(FIXTURES.glob("*/*.json"))]
    return found


@pytest.mark.parametrize(("forge", "path"), payload_files(), ids=lambda v: getattr(v, "name", v))
def test_the_repository_of_every_real_payload_is_found_in_its_raw_bytes(forge: str, path: Path) -> None:
    body = path.read_bytes()
    named = FORGES[forge].repository_path(json.loads(body))
    candidates = FORGES[forge].repository_candidates(body)
    assert named is None or named in candidates
    assert len(candidates) <= MAX_CANDIDATES


# Text a forge can send: UTF-8 has no lone surrogates.
NAMES = st.text(st.characters(blacklist_categories=["Cs"]), min_size=1, max_size=100)


@given(name=NAMES, indent=st.sampled_from([None, 2]), ascii_only=st.booleans())
def test_a_name_is_found_however_the_json_is_written(name: str, indent: int | None, ascii_only: bool) -> None:
    payload: dict[str, Any] = {"ref": "refs/heads/main", "repository": {"id": 1, "full_name": name}}
    body = json.dumps(payload, indent=indent, ensure_ascii=ascii_only).encode()
    assert string_values(body, "full_name") == [name]


@given(st.binary(max_size=2000))
def test_no_bytes_make_the_scan_raise_or_return_more_than_a_few_names(body: bytes) -> None:
    found = string_values(b'{"full_name": "a/b", ' + body, "full_name")
    assert 1 <= len(found) <= MAX_CANDIDATES and all(isinstance(name, str) for name in found)


def test_the_longest_registrable_name_is_found_even_with_every_character_escaped() -> None:
    name = "o/" + "n" * 253
    escaped = "".join(f"\\u{ord(c):04x}" for c in name)
    assert string_values(b'{"full_name": "%s"}' % escaped.encode(), "full_name") == [name]


def test_a_key_written_inside_a_string_is_not_a_name() -> None:
    message = 'we moved "full_name": "evil/repo" to the docs'
    body = json.dumps({"head_commit": {"message": message}, "repository": {"full_name": "octo/app"}}).encode()
    assert string_values(body, "full_name") == ["octo/app"]


def test_a_body_packed_with_names_gives_only_the_first_few_and_names_once_whatever_their_case() -> None:
    body = b'{"full_name": "Octo/App", "full_name": "octo/app", ' + b", ".join(
        b'"full_name": "o/n%d"' % n for n in range(100_000)
    )
    assert string_values(body, "full_name") == ["Octo/App", "o/n0", "o/n1", "o/n2"]


def test_only_the_first_places_the_key_appears_are_looked_at() -> None:
    """What an unsigned body costs is bounded: a name hidden behind many decoys is not found (a real
    payload names its repository near the top)."""
    decoys = b'"full_name": 1, ' * MAX_PLACES
    assert string_values(decoys + b'"full_name": "octo/app"', "full_name") == []
    assert string_values(decoys[16:] + b'"full_name": "octo/app"', "full_name") == ["octo/app"]
