"""Source code for a build: one bare mirror per project, fetched when a commit is missing, and a
workspace per job checked out at the exact pushed sha (never the branch head, which may have moved).

Every git call goes through GitPython with user input after `--`, and git may only use the
transports in GIT_ALLOW_PROTOCOL, so a registered URL can never become a git option or `ext::`.
"""

from __future__ import annotations

import fcntl
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from git import Git
from git.exc import GitCommandError

from ciserver.clone_urls import git_protocols, redact

FETCH_REFSPECS = ("+refs/heads/*:refs/heads/*", "+refs/tags/*:refs/tags/*")


class CheckoutError(Exception):
    """The commit could not be had; the message is safe to show (no credentials)."""


def git_env(allow_local: bool) -> dict[str, str]:
    return {
        "GIT_ALLOW_PROTOCOL": git_protocols(allow_local),
        "GIT_TERMINAL_PROMPT": "0",  # a private repository without credentials fails, it never waits
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_ASKPASS": "true",
        "SSH_ASKPASS": "true",
    }


def _git(cwd: Path | None, allow_local: bool) -> Git:
    git = Git(str(cwd) if cwd else None)
    git.update_environment(**git_env(allow_local))
    return git


@contextmanager
def _locked(mirror: Path) -> Iterator[None]:
    """One fetch at a time per mirror, across the worker processes of a host."""
    mirror.parent.mkdir(parents=True, exist_ok=True)
    with open(mirror.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def has_commit(mirror: Path, sha: str) -> bool:
    if not (mirror / "HEAD").exists():
        return False
    try:
        _git(mirror, False).cat_file("-e", f"{sha}^{{commit}}")
        return True
    except GitCommandError:
        return False


def ensure_commit(mirror: Path, url: str, sha: str, *, allow_local: bool) -> None:
    """Make sure the mirror of `url` holds commit `sha`, cloning or fetching only when it does not."""
    if has_commit(mirror, sha):
        return
    with _locked(mirror):
        if has_commit(mirror, sha):  # another worker fetched it while we waited
            return
        try:
            if not (mirror / "HEAD").exists():
                _clone_mirror(mirror, url, allow_local)
            else:
                _git(mirror, allow_local).fetch("--prune", "--quiet", "--", url, *FETCH_REFSPECS)
            if not has_commit(mirror, sha):
                # Force-pushed away already, or not on a branch: ask for the commit itself.
                _git(mirror, allow_local).fetch("--quiet", "--", url, sha)
        except GitCommandError as exc:
            raise CheckoutError(f"git could not fetch {redact(url)}: {_stderr(exc, url)}") from None
    if not has_commit(mirror, sha):
        raise CheckoutError(f"commit {sha} is not in {redact(url)}")


def _clone_mirror(mirror: Path, url: str, allow_local: bool) -> None:
    partial = mirror.with_name(mirror.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    git = _git(None, allow_local)
    git.init("--bare", "--quiet", "--", str(partial))
    _git(partial, allow_local).fetch("--quiet", "--", url, *FETCH_REFSPECS)
    os.replace(partial, mirror)  # a clone cut short never looks like a mirror


def read_file_at(mirror: Path, sha: str, path: str) -> bytes | None:
    """The file's bytes at that commit, or None if the commit has no such file."""
    try:
        return _git(mirror, False).execute(
            ["git", "cat-file", "blob", f"{sha}:{path}"],
            strip_newline_in_stdout=False,
            as_process=False,
            stdout_as_string=False,
        )  # type: ignore[return-value]
    except GitCommandError:
        return None


def checkout_at_sha(mirror: Path, sha: str, workspace: Path) -> None:
    """A fresh workspace with the files of `sha` and a .git of its own (jobs may run git in it).

    A local clone hard-links the mirror's packs instead of copying them, so this costs a few
    milliseconds even for a large repository, and needs no alternates path that would not
    exist inside the job's container.
    """
    shutil.rmtree(workspace, ignore_errors=True)
    workspace.parent.mkdir(parents=True, exist_ok=True)
    try:
        # The mirror is our own directory: the one place the file transport is always allowed.
        _git(None, True).clone("--quiet", "--no-checkout", "--", str(mirror), str(workspace))
        _git(workspace, False).checkout("--quiet", "--detach", sha)
    except GitCommandError as exc:
        raise CheckoutError(f"git could not check out {sha}: {_stderr(exc, '')}") from None


def _stderr(exc: GitCommandError, url: str) -> str:
    text = str(exc.stderr or exc).strip().replace("stderr: ", "").strip("'\" \n")
    return text.replace(url, redact(url)) if url else text
