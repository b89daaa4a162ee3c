"""Refs and object ids from a webhook: what git would refuse is a malformed payload, the rest is data."""

from __future__ import annotations

import shutil
import subprocess

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ciserver.forges.base import MalformedPayload
from ciserver.forges.refs import branch_and_tag, check_ref, check_sha, is_zero_sha, ref_problem

SHA1 = "0123456789abcdef0123456789abcdef01234567"
SHA256 = "0123456789abcdef" * 4


def test_an_upper_case_object_id_is_normalised_to_lower_case() -> None:
    assert check_sha(SHA1.upper(), "after") == SHA1


def test_a_sha256_object_id_is_accepted() -> None:
    assert check_sha(SHA256, "after") == SHA256


@pytest.mark.parametrize(
    "value",
    [
        "",
        "abc123",
        SHA1[:-1],
        SHA1 + "0",
        SHA256[:-1],
        "g" * 40,
        " " + SHA1,
        SHA1 + "\n",
        "\uff10" * 40,  # fullwidth zeros are digits to Python, not to git
    ],
)
def test_an_object_id_that_is_not_40_or_64_hex_digits_is_malformed(value: str) -> None:
    with pytest.raises(MalformedPayload, match=r"^after: expected 40 or 64 hexadecimal digits"):
        check_sha(value, "after")


def test_only_all_zeros_is_the_zero_object_id() -> None:
    assert is_zero_sha("0" * 40)
    assert is_zero_sha("0" * 64)
    assert not is_zero_sha(SHA1)
    assert not is_zero_sha("")


VALID_REFS = [
    "refs/heads/main",
    "refs/heads/feature/basket",
    "refs/heads/release-1.0",
    "refs/heads/a.b",
    "refs/heads/@",
    "refs/heads/user@host",
    "refs/heads/fix-$HOME",
    "refs/heads/a;rm",
    "refs/heads/a&b|c",
    "refs/heads/`id`",
    "refs/heads/$(touch${IFS}x)",
    "refs/heads/'quoted'\"double\"",
    "refs/heads/a>b<c",
    "refs/heads/über-straße",
    "refs/tags/v1.0.0",
    "refs/pull/12/head",
]


@pytest.mark.parametrize("ref", VALID_REFS)
def test_a_ref_git_accepts_is_valid_and_kept_unchanged(ref: str) -> None:
    assert check_ref(ref, "ref") == ref


INVALID_REFS = [
    ("refs/heads/--upload-pack=touch /tmp/pwned", "component starting with '-'"),
    ("refs/heads/-x", "component starting with '-'"),
    ("-refs/heads/x", "starts with '-'"),
    ("refs/heads/a..b", "contains '..'"),
    ("refs/heads/../../etc/passwd", "contains '..'"),
    ("refs/heads/a b", "character ' '"),
    ("refs/heads/a\tb", "character '\\\\t'"),
    ("refs/heads/a\nb", "character '\\\\n'"),
    ("refs/heads/a\x00b", "character '\\\\x00'"),
    ("refs/heads/a\x7fb", "character '\\\\x7f'"),
    ("refs/heads/a~1", "character '~'"),
    ("refs/heads/a^", "character '\\^'"),
    ("refs/heads/a:b", "character ':'"),
    ("refs/heads/a?", "character '\\?'"),
    ("refs/heads/a*", "character '\\*'"),
    ("refs/heads/a[b", "character '\\['"),
    ("refs/heads/a\\b", "character '\\\\\\\\'"),
    ("refs/heads/a@{1}", "contains '@{'"),
    ("refs/heads/.hidden", "component starting with '.'"),
    ("refs/heads/main.lock", "ending with '.lock'"),
    ("refs/heads/x.lock/y", "ending with '.lock'"),
    ("refs/heads/", "ends with '/'"),
    ("/refs/heads/x", "starts or ends with '/'"),
    ("refs/heads//x", "contains '//'"),
    ("refs/heads/x.", "ends with '.'"),
    ("main", "has no '/'"),
    ("", "is empty"),
    ("refs/heads/" + "a/" * 507 + "b", "is longer than 1024 characters"),  # git allows it; the store does not
]


@pytest.mark.parametrize(("ref", "rule"), INVALID_REFS)
def test_a_ref_git_refuses_is_malformed_and_the_rule_is_named(ref: str, rule: str) -> None:
    with pytest.raises(MalformedPayload, match=rf"^ref: .*{rule}"):
        check_ref(ref, "ref")


def test_the_error_names_the_field_it_came_from() -> None:
    with pytest.raises(MalformedPayload) as caught:
        check_ref("refs/heads/a..b", "ref")
    assert type(caught.value) is MalformedPayload
    assert caught.value.message == "ref: contains '..'"


@pytest.mark.parametrize(
    ("ref", "branch", "tag"),
    [
        ("refs/heads/main", "main", None),
        ("refs/heads/feature/basket", "feature/basket", None),
        ("refs/tags/v1.0", None, "v1.0"),
        ("refs/tags/release/2024", None, "release/2024"),
        ("refs/pull/12/head", None, None),
        ("refs/merge-requests/3/head", None, None),
        ("refs/headsx/main", None, None),
        ("refs/notes/commits", None, None),
    ],
)
def test_a_ref_is_a_branch_a_tag_or_neither(ref: str, branch: str | None, tag: str | None) -> None:
    assert branch_and_tag(ref) == (branch, tag)


REF_ALPHABET = [*"ab0-_./@{}~^:?*[]\\ $;&|`'\"\t\x00\x7fé", ".lock", "..", "@{", "refs/", "heads/"]


def _git_accepts(ref: str) -> bool:
    done = subprocess.run(["git", "check-ref-format", ref], capture_output=True, check=False)
    return done.returncode == 0


@pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")
@settings(max_examples=300, deadline=None)
@given(tail=st.lists(st.sampled_from(REF_ALPHABET), max_size=12).map("".join))
def test_every_ref_we_accept_git_accepts_too(tail: str) -> None:
    ref = "refs/heads/" + tail
    if "\x00" in ref:  # cannot be a command-line argument at all, and we refuse it
        assert ref_problem(ref) is not None
        return
    if ref_problem(ref) is None:
        assert _git_accepts(ref), ref
