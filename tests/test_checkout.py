"""The mirror and the workspaces, with real git: what planning reads while a fetch is under way,
what a failed read says, that the worker's own git configuration never runs on a checkout, and that
no file of a workspace is shared with the store or another workspace."""

from __future__ import annotations

import fcntl
import os
import subprocess
import threading
from pathlib import Path

import pytest

from ciserver.clone_urls import Remote
from ciserver.storage import FileBlobStore
from tests.support.git import commit, git, make_repo
from workers import artifacts, cache
from workers.checkout import CheckoutError, checkout_at_sha, ensure_commit, read_file_at


def mirror_of(repo: Path, tmp_path: Path) -> tuple[Path, str]:
    mirror = tmp_path / "mirrors" / "1.git"
    sha = git(repo, "rev-parse", "HEAD")
    ensure_commit(mirror, Remote(str(repo)), sha, allow_local=True)
    return mirror, sha


def copy_object(source: Path, mirror: Path, sha: str) -> None:
    """Write one object of `source` into `mirror` as a loose object, as a fetch does one at a time."""
    kind = git(source, "cat-file", "-t", sha)
    body = subprocess.run(
        ["git", "-C", str(source), "cat-file", kind, sha], check=True, capture_output=True
    ).stdout
    subprocess.run(
        ["git", "-C", str(mirror), "hash-object", "-w", "--stdin", "-t", kind],
        input=body,
        check=True,
        capture_output=True,
    )


def test_planning_waits_for_a_fetch_under_way_and_reads_the_pushed_file(tmp_path: Path) -> None:
    """The race of a burst of pushes: a fetch has written the commit but not yet its tree and blob,
    and holds the mirror's lock; another worker asks for that commit's pipelines.yml."""
    repo = tmp_path / "repo"
    make_repo(repo, {"README": "first\n"})
    mirror, _ = mirror_of(repo, tmp_path)
    sha = commit(repo, {"pipelines.yml": "jobs: {}\n"}, "add the pipeline")
    tree = git(repo, "rev-parse", f"{sha}^{{tree}}")
    blob = git(repo, "rev-parse", f"{sha}:pipelines.yml")

    read: list[bytes | Exception | None] = []

    def plan() -> None:
        try:
            ensure_commit(mirror, Remote(str(repo)), sha, allow_local=True)
            read.append(read_file_at(mirror, sha, "pipelines.yml"))
        except CheckoutError as exc:
            read.append(exc)

    with open(mirror.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # the fetch of another worker
        copy_object(repo, mirror, sha)
        planner = threading.Thread(target=plan)
        planner.start()
        planner.join(0.5)
        assert read == [], "planning read the commit while its fetch was under way"
        copy_object(repo, mirror, tree)
        copy_object(repo, mirror, blob)
    planner.join(10)
    assert read == [b"jobs: {}\n"]


def test_a_commit_without_the_file_reads_as_not_found(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    make_repo(repo, {"README": "no pipeline here\n"})
    mirror, sha = mirror_of(repo, tmp_path)
    assert read_file_at(mirror, sha, "pipelines.yml") is None


def test_a_read_that_fails_is_an_error_naming_gits_message_not_a_missing_file(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    make_repo(repo, {"README": "first\n"})
    mirror, _ = mirror_of(repo, tmp_path)
    sha = commit(repo, {"pipelines.yml": "jobs: {}\n"}, "add the pipeline")
    copy_object(repo, mirror, sha)  # the commit without its tree: a damaged mirror
    with pytest.raises(CheckoutError) as error:
        read_file_at(mirror, sha, "pipelines.yml")
    assert str(error.value) == (
        f"pipelines.yml: git could not read it at commit {sha[:12]}: fatal: not a tree object"
    )


def test_a_directory_or_a_symlink_named_like_the_file_is_said_to_be_one(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    make_repo(repo, {"pipelines.yml/inside": "x\n"})
    mirror, sha = mirror_of(repo, tmp_path)
    with pytest.raises(CheckoutError, match=r"^pipelines\.yml is a directory in commit \w+, not a file$"):
        read_file_at(mirror, sha, "pipelines.yml")
    git(repo, "rm", "-rq", "pipelines.yml")
    (repo / "pipelines.yml").symlink_to("/etc/passwd")
    sha = commit(repo, {}, "a link")
    ensure_commit(mirror, Remote(str(repo)), sha, allow_local=True)
    with pytest.raises(CheckoutError, match=r"^pipelines\.yml is a symbolic link in commit \w+, not a file$"):
        read_file_at(mirror, sha, "pipelines.yml")


def test_the_workers_own_git_configuration_never_runs_on_a_checkout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A host whose git configuration (the worker user's HOME) has a smudge filter, an fsmonitor, a
    hooks path and a template directory, each of which would leave a marker file."""
    home, markers = tmp_path / "home", tmp_path / "markers"
    hooks, templates = home / "hooks", home / "templates"
    for directory in (markers, hooks, templates / "hooks"):
        directory.mkdir(parents=True)
    for hook_dir in (hooks, templates / "hooks"):
        for hook in ("post-checkout", "post-merge", "reference-transaction"):
            (hook_dir / hook).write_text(f"#!/bin/sh\ntouch {markers}/hook-{hook}\n")
            (hook_dir / hook).chmod(0o755)
    (home / ".gitconfig").write_text(
        f"""[filter "evil"]
\tsmudge = touch {markers}/smudge; cat
[filter "lfs"]
\tsmudge = touch {markers}/lfs; cat
\trequired = true
[core]
\tfsmonitor = touch {markers}/fsmonitor; true
\thooksPath = {hooks}
[init]
\ttemplateDir = {templates}
"""
    )
    repo = tmp_path / "repo"
    make_repo(repo, {".gitattributes": "* filter=evil\n*.bin filter=lfs\n", "a.txt": "a\n", "b.bin": "b\n"})
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("XDG_CONFIG_HOME", raising=False)
    mirror, sha = mirror_of(repo, tmp_path)
    workspace = tmp_path / "workspace"
    checkout_at_sha(mirror, sha, workspace)
    assert sorted(p.name for p in markers.iterdir()) == []
    assert (workspace / "a.txt").read_text() == "a\n"
    for made in (workspace / ".git", mirror):
        assert not (made / "hooks" / "post-checkout").exists()


def test_artifacts_placed_and_a_cache_restored_are_each_workspaces_own_files(tmp_path: Path) -> None:
    """The other ways files reach a workspace: a job rewriting them in place (as root may, whatever
    their mode) changes neither the store nor what the next job gets."""
    artifact_store, cache_store = FileBlobStore(tmp_path / "store"), FileBlobStore(tmp_path / "caches")
    stored = artifact_store.path("1")
    stored.parent.mkdir()
    stored.write_text("wheel")
    source = tmp_path / "source"
    (source / ".cache").mkdir(parents=True)
    (source / ".cache" / "a").write_text("cached")
    os.link(source / ".cache" / "a", source / ".cache" / "b")  # a job may hard-link inside its workspace
    archive = cache.archive_key(1, "refs/heads/main", "key")
    cache.save(cache_store, archive, source, [".cache"], max_bytes=10**6)

    first, second = tmp_path / "first", tmp_path / "second"
    for workspace in (first, second):
        workspace.mkdir()
        artifacts.place([("dist/a.whl", "1")], workspace, artifact_store)
        assert cache.restore(cache_store, archive, workspace)
    for path in (first / "dist" / "a.whl", first / ".cache" / "a", first / ".cache" / "b"):
        with open(path, "r+b") as f:
            f.write(b"TAMPER")
    assert stored.read_text() == "wheel"
    assert (second / "dist" / "a.whl").read_text() == "wheel"
    assert [(second / ".cache" / n).read_text() for n in "ab"] == ["cached", "cached"]
    third = tmp_path / "third"
    third.mkdir()
    assert cache.restore(cache_store, archive, third) and (third / ".cache" / "a").read_text() == "cached"
