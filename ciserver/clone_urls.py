"""Which clone URLs a project may register, how their credentials are kept apart, and how they
are shown without credentials.

A clone URL ends up as an argument to git, so anything git could read as an option or as a
transport that runs commands (``ext::``) is refused here, before it is ever stored. Credentials never
reach git's arguments, where `ps` shows them: a `Remote` holds them beside the bare URL.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit, urlunsplit

REMOTE_SCHEMES = ("https", "ssh")
_SCP_LIKE = re.compile(r"^[A-Za-z0-9._-]+@[A-Za-z0-9.-]+:[^/\\].*$")  # git@host:owner/name.git


class CloneURLError(ValueError):
    """A clone URL the server will not use; the message says why."""


def git_protocols(allow_local: bool) -> str:
    """The value for GIT_ALLOW_PROTOCOL: the transports git may use at all."""
    return "https:ssh:file" if allow_local else "https:ssh"


def check_clone_url(url: str, *, allow_local: bool) -> str:
    """Return `url` (local paths made absolute) if it is safe to clone, else raise CloneURLError."""
    if not url or url != url.strip() or any(ord(c) < 32 or c == "\x7f" for c in url):
        raise CloneURLError("repo: empty, or contains whitespace or control characters")
    if url.startswith("-"):
        raise CloneURLError("repo: must not start with '-' (git would read it as an option)")
    if "::" in url.split("/", 1)[0]:
        raise CloneURLError("repo: transport helpers such as 'ext::' are refused")
    if _SCP_LIKE.match(url):
        return url
    parts = urlsplit(url)
    if parts.scheme in REMOTE_SCHEMES:
        if not parts.hostname:
            raise CloneURLError(f"repo: {parts.scheme} URL has no host")
        if parts.scheme == "ssh" and parts.password is not None:
            raise CloneURLError(
                "repo: an ssh URL cannot hold a password (ssh would get it in its arguments); use a key"
            )
        Remote.parse(url)  # refuses credentials git would misread
        return url
    if parts.scheme == "file" or (not parts.scheme and "://" not in url):
        if not allow_local:
            raise CloneURLError(
                "repo: local repositories (file:// and paths) are refused; "
                "set CISERVER_ALLOW_LOCAL_REPOS=true to allow them"
            )
        path = Path(parts.path if parts.scheme == "file" else url).expanduser().resolve()
        if not path.exists():
            raise CloneURLError(f"repo: no repository at {path}")
        return str(path)
    raise CloneURLError(f"repo: scheme {parts.scheme!r} is not accepted (use https or ssh)")


def redact(url: str) -> str:
    """The URL with any password or token replaced, for logs and API answers."""
    parts = urlsplit(url)
    if parts.password is None and not (parts.username and parts.scheme == "https"):
        return url
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit(parts._replace(netloc=f"***@{host}"))


@dataclass(frozen=True)
class Remote:
    """A clone URL without credentials, and the https credentials that were in it."""

    url: str
    username: str | None = None
    password: str | None = None

    @classmethod
    def parse(cls, url: str) -> Remote:
        """Split `https://user:token@host/...` into the bare URL and its (percent-decoded) credentials."""
        parts = urlsplit(url)
        if parts.scheme != "https" or parts.username is None:
            return cls(url)
        username = unquote(parts.username)
        password = None if parts.password is None else unquote(parts.password)
        if any(ord(c) < 32 or c == "\x7f" for c in username + (password or "")):
            raise CloneURLError("repo: credentials must not contain control characters")
        netloc = parts.netloc.rpartition("@")[2]
        return cls(urlunsplit(parts._replace(netloc=netloc)), username, password)

    @property
    def shown(self) -> str:
        """The URL for answers and logs: `https://***@host/...` when it has credentials."""
        return redact(self.url) if self.username is None else starred(self.url)


def starred(url: str) -> str:
    """`https://***@host/...`: how a URL whose credentials are kept apart from it is shown."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(netloc=f"***@{parts.netloc}"))
