"""Source code for a build: one bare mirror per project, fetched when a commit is missing, and a
workspace per job checked out at the exact pushed sha (never the branch head, which may have moved).

Every git call goes through GitPython with user input after `--`, and git may only use the
transports in GIT_ALLOW_PROTOCOL, so a registered URL can never become a git option or `ext::`
(see workers.git_command for the rest of git's environment).

A fetch takes the mirror's lock alone and every read shares it: git stores a small fetch as loose
objects written one at a time, the commit before its tree and blobs, so a reader that did not wait
could take a commit for present and its files for missing.
"""

from __future__ import annotations

import fcntl
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from git.exc import GitCommandError

from ciserver.clone_urls import Remote
from workers.git_command import git_at, git_message

FETCH_REFSPECS = ("+refs/heads/*:refs/heads/*", "+refs/tags/*:refs/tags/*")
# What a tree entry that is not a regular file is, by its git mode.
_NOT_A_FILE = {"040000": "a directory", "120000": "a symbolic link", "160000": "a submodule"}


class CheckoutError(Exception):
    """The commit or a file of it could not be had; the message is safe to show (no credentials)."""


@contextmanager
def _locked(mirror: Path, *, alone: bool) -> Iterator[None]:
    """The mirror's lock across the worker processes of a host: alone to fetch, shared to read."""
    mirror.parent.mkdir(parents=True, exist_ok=True)
    with open(mirror.with_suffix(".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX if alone else fcntl.LOCK_SH)
        yield


def _has_commit(mirror: Path, sha: str) -> bool:
    """Whether the mirror holds the commit; only meaningful under the mirror's lock."""
    if not (mirror / "HEAD").exists():
        return False
    try:
        git_at(mirror, False).cat_file("-e", f"{sha}^{{commit}}")
        return True
    except GitCommandError:
        return False


def ensure_commit(mirror: Path, remote: Remote, sha: str, *, allow_local: bool) -> None:
    """Make sure the mirror of `remote` holds commit `sha`, cloning or fetching only when it does not."""
    with _locked(mirror, alone=False):
        if _has_commit(mirror, sha):
            return
    with _locked(mirror, alone=True):
        if _has_commit(mirror, sha):  # another worker fetched it while we waited
            return
        git = git_at(mirror, allow_local, remote)
        try:
            if not (mirror / "HEAD").exists():
                _clone_mirror(mirror, remote, allow_local)
            else:
                git.fetch("--prune", "--quiet", "--", remote.url, *FETCH_REFSPECS)
            if not _has_commit(mirror, sha):
                # Force-pushed away already, or not on a branch: ask for the commit itself.
                git.fetch("--quiet", "--", remote.url, sha)
        except GitCommandError as exc:
            raise CheckoutError(f"git could not fetch {remote.shown}: {git_message(exc, remote)}") from None
        if not _has_commit(mirror, sha):
            raise CheckoutError(f"commit {sha} is not in {remote.shown}")


def _clone_mirror(mirror: Path, remote: Remote, allow_local: bool) -> None:
    partial = mirror.with_name(mirror.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    git_at(None, allow_local).init("--bare", "--quiet", "--template=", "--", str(partial))
    git_at(partial, allow_local, remote).fetch("--quiet", "--", remote.url, *FETCH_REFSPECS)
    os.replace(partial, mirror)  # a clone cut short never looks like a mirror


def read_file_at(mirror: Path, sha: str, path: str) -> bytes | None:
    """The file's bytes at that commit; None only when the commit has no such path. Anything else
    (a directory or a link by that name, a read git cannot do) is a CheckoutError saying which."""
    with _locked(mirror, alone=False):
        git = git_at(mirror, False)
        try:
            entry = git.ls_tree("-z", "--full-tree", sha, "--", path)
            if not entry:
                return None
            mode, _, oid = entry.partition("\t")[0].split()
            if mode in _NOT_A_FILE:
                raise CheckoutError(f"{path} is {_NOT_A_FILE[mode]} in commit {sha[:12]}, not a file")
            return git.execute(
                ["git", "cat-file", "blob", oid],
                strip_newline_in_stdout=False,
                as_process=False,
                stdout_as_string=False,
            )  # type: ignore[return-value]
        except GitCommandError as exc:
            raise CheckoutError(
                f"{path}: git could not read it at commit {sha[:12]}: {git_message(exc)}"
            ) from None


def checkout_at_sha(mirror: Path, sha: str, workspace: Path) -> None:
    """A fresh workspace with the files of `sha` and a .git of its own with the whole history (jobs
    may run git in it).

    Its objects are copies, never hard links to the mirror's: a job runs as root with DAC_OVERRIDE
    and may rewrite any file it reaches, and a shared inode would change what later builds check
    out. Copying costs about 50 ms for a 50k-commit repository (benchmarks/checkout.py).
    """
    shutil.rmtree(workspace, ignore_errors=True)
    workspace.parent.mkdir(parents=True, exist_ok=True)
    try:
        with _locked(mirror, alone=False):
            # The mirror is our own directory: the one place the file transport is always allowed.
            git_at(None, True).clone(
                "--quiet", "--no-checkout", "--no-hardlinks", "--template=", "--", str(mirror), str(workspace)
            )
        git_at(workspace, False).checkout("--quiet", "--detach", sha)
    except GitCommandError as exc:
        raise CheckoutError(f"git could not check out {sha}: {git_message(exc)}") from None
