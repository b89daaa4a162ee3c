"""Which clone URLs a project may register: nothing git could read as an option or a command."""

from __future__ import annotations

from pathlib import Path

import pytest

from ciserver.clone_urls import CloneURLError, check_clone_url, redact


@pytest.mark.parametrize(
    "url",
    [
        "https://github.com/octo/hello.git",
        "ssh://git@gitlab.example.com/group/app.git",
        "git@github.com:octo/x.git",
    ],
)
def test_remote_https_and_ssh_urls_are_accepted(url: str) -> None:
    assert check_clone_url(url, allow_local=False) == url


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("ext::sh -c touch% /tmp/pwned", "ext::"),
        ("fd::17", "ext::"),
        ("--upload-pack=touch /tmp/pwned", "'-'"),
        ("-u", "'-'"),
        ("http://github.com/octo/x.git", "scheme 'http'"),
        ("ftp://example.org/x.git", "scheme 'ftp'"),
        ("https:///nohost", "no host"),
        ("ssh://git:hunter2@example.org/o/r.git", "use a key"),
        ("https://bot:a%0Ab@example.org/o/r.git", "credentials must not contain control characters"),
        ("https://github.com/octo/x.git\n", "whitespace"),
        ("", "empty"),
        ("/srv/git/app.git", "CISERVER_ALLOW_LOCAL_REPOS"),
        ("file:///srv/git/app.git", "CISERVER_ALLOW_LOCAL_REPOS"),
    ],
)
def test_dangerous_or_unknown_urls_are_refused_with_the_reason(url: str, reason: str) -> None:
    with pytest.raises(CloneURLError, match=r"^repo: ") as error:
        check_clone_url(url, allow_local=False)
    assert reason in str(error.value)


def test_local_paths_need_the_setting_and_must_exist(tmp_path: Path) -> None:
    assert check_clone_url(str(tmp_path), allow_local=True) == str(tmp_path)
    assert check_clone_url(f"file://{tmp_path}", allow_local=True) == str(tmp_path)
    with pytest.raises(CloneURLError, match="no repository"):
        check_clone_url(str(tmp_path / "missing"), allow_local=True)


def test_credentials_are_hidden_when_a_url_is_shown() -> None:
    assert redact("https://user:hunter2@github.com/o/r.git") == "https://***@github.com/o/r.git"
    assert redact("https://ghp_token@github.com/o/r.git") == "https://***@github.com/o/r.git"
    assert redact("https://github.com/o/r.git") == "https://github.com/o/r.git"
    assert redact("git@github.com:o/r.git") == "git@github.com:o/r.git"
