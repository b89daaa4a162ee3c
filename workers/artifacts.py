"""Collect a job's artifacts from its workspace into the artifact store, and place them into the
workspaces of the jobs after it.

The paths come from a pipeline file, so from whoever can push: every file taken must be inside the
workspace once symlinks are resolved. A path that leads out is refused with the path named, never
followed. The size limit holds before and while copying: a sparse 10 TB file is refused from its
size alone, and no copy ever writes past the limit, so the store never grows beyond it.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from ciserver.storage import BlobStore
from workers.workspace_glob import WalkTooLarge, glob_workspace

CHUNK = 1024 * 1024


class ArtifactError(Exception):
    """An artifact path the job may not keep (outside the workspace, too large); the job fails."""


@dataclass(frozen=True)
class StoredFile:
    """One file copied into the store: its path in the workspace and where its bytes now are."""

    path: str
    size: int
    sha256: str
    storage_key: str


def collect(
    workspace: Path,
    patterns: Iterable[str],
    store: BlobStore,
    job_id: int,
    *,
    max_bytes: int,
    warn: Callable[[str], None],
) -> list[StoredFile]:
    """Copy the files `patterns` name (globs; a directory means everything under it) into the store;
    on any failure none of them stays there."""
    root = workspace.resolve()
    chosen: dict[str, Path] = {}
    for pattern in patterns:
        found = list(_matches(root, pattern))
        if not found:
            warn(f"artifacts: {pattern!r} matched no file")
        for path in found:
            chosen.setdefault(path.relative_to(root).as_posix(), path)
    files = sorted(chosen.items())
    total = 0
    for relative, path in files:
        total += path.stat().st_size
        if total > max_bytes:
            raise _over_limit(relative, max_bytes)
    stored: list[StoredFile] = []
    left = max_bytes
    try:
        for index, (relative, path) in enumerate(files):
            key = f"{job_id}/{index}"
            copied = _copy(path, store, key, left)
            if copied is None:
                raise _over_limit(relative, max_bytes)
            size, digest = copied
            left -= size
            stored.append(StoredFile(relative, size, digest, key))
    except BaseException:
        for kept in stored:
            store.delete(kept.storage_key)
        raise
    return stored


def _over_limit(relative: str, max_bytes: int) -> ArtifactError:
    return ArtifactError(
        f"artifacts: over the limit of {max_bytes:,} bytes (CISERVER_ARTIFACT_MAX_BYTES) at {relative!r}"
    )


def _matches(root: Path, pattern: str) -> Iterator[Path]:
    """Regular files under `root` that `pattern` names, each checked to stay inside `root`."""
    clean = pattern.rstrip("/")
    pure = PurePosixPath(clean)
    if pure.is_absolute() or ".." in pure.parts or not clean:
        raise ArtifactError(f"artifacts: {pattern!r} must be a relative path inside the workspace")
    try:
        found = sorted(glob_workspace(root, clean))
    except WalkTooLarge as exc:
        raise ArtifactError(f"artifacts: {exc}") from None
    for match in found:
        resolved = _inside(root, match, pattern)
        if resolved.is_dir():
            yield from _walk(root, resolved, pattern)
        elif resolved.is_file():
            yield resolved


def _walk(root: Path, directory: Path, pattern: str) -> Iterator[Path]:
    for dirpath, dirnames, filenames in os.walk(directory):  # does not follow symlinked directories
        for name in sorted(filenames) + [d for d in dirnames if Path(dirpath, d).is_symlink()]:
            path = Path(dirpath, name)
            resolved = _inside(root, path, pattern)
            if resolved.is_file():
                yield resolved
        dirnames.sort()


def _inside(root: Path, path: Path, pattern: str) -> Path:
    resolved = path.resolve()
    if resolved != root and root not in resolved.parents:
        shown = path.relative_to(root).as_posix() if path.is_relative_to(root) else str(path)
        raise ArtifactError(
            f"artifacts: {shown!r} (from {pattern!r}) leads outside the workspace (a symlink?); refused"
        )
    return resolved


class _OverLimit(Exception):
    pass


def _copy(source: Path, store: BlobStore, key: str, limit: int) -> tuple[int, str] | None:
    """Size and sha256 of the copy; None, having kept nothing, when the file holds more than `limit`
    bytes (it grew since it was measured)."""
    digest = hashlib.sha256()
    size = 0
    try:
        with source.open("rb") as src, store.writer(key) as dst:
            while chunk := src.read(min(CHUNK, limit - size + 1)):
                size += len(chunk)
                if size > limit:
                    raise _OverLimit
                digest.update(chunk)
                dst.write(chunk)
    except _OverLimit:
        return None
    return size, digest.hexdigest()


def place(files: Iterable[tuple[str, str]], workspace: Path, store: BlobStore) -> int:
    """Copy stored files (workspace path, storage key) into a workspace; returns how many."""
    root = workspace.resolve()
    count = 0
    for relative, key in files:
        target = root / relative
        if root not in target.resolve().parents:
            raise ArtifactError(f"artifacts: {relative!r} would be placed outside the workspace")
        chunks = store.chunks(key)
        if chunks is None:
            raise ArtifactError(f"artifacts: {relative!r} is gone from the artifact store")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.unlink(missing_ok=True)
        with target.open("xb") as out:
            for chunk in chunks:
                out.write(chunk)
        count += 1
    return count
