"""The per-project cache: a tar of a job's cache paths, saved after it succeeds under its rendered
key, restored into the workspace of the next job with the same key.

Archives are written to a temporary file and renamed, so a reader sees a whole archive or none,
and extracted with tarfile's "data" filter, which refuses members that lead out of the workspace.
"""

from __future__ import annotations

import hashlib
import os
import tarfile
import tempfile
from collections.abc import Iterable
from pathlib import Path, PurePosixPath

from ciserver.pipeline import cache_key_parts


class CacheError(Exception):
    """A cache that cannot be saved (too large, a path outside the workspace)."""


def render_key(template: str, workspace: Path) -> str:
    """The key with every `{{ hashFiles('glob', ...) }}` replaced by the hash of the files it names
    (the loader has already refused any other template)."""
    return "".join(
        part if isinstance(part, str) else hash_files(workspace, part.patterns)
        for part in cache_key_parts(template)
    )


def hash_files(workspace: Path, patterns: Iterable[str]) -> str:
    """SHA-256 over the SHA-256 of each matching file, in path order (GitHub's hashFiles); empty
    when nothing matches, so the key still renders."""
    root = workspace.resolve()
    files = sorted({path for pattern in patterns for path in root.glob(pattern) if path.is_file()})
    if not files:
        return ""
    outer = hashlib.sha256()
    for path in files:
        if root not in path.resolve().parents:
            continue  # a symlink out of the workspace does not take part
        outer.update(hashlib.sha256(path.read_bytes()).digest())
    return outer.hexdigest()


def archive_path(cache_root: Path, project_id: int, key: str) -> Path:
    """Where a project's cache of one key lives; the key is hashed, so it may hold any character."""
    return cache_root / str(project_id) / f"{hashlib.sha256(key.encode()).hexdigest()[:40]}.tar"


def restore(archive: Path, workspace: Path) -> bool:
    """Unpack the archive into the workspace; False when there is none (a miss)."""
    if not archive.is_file():
        return False
    with tarfile.open(archive) as tar:
        tar.extractall(workspace, filter="data")
    return True


def save(archive: Path, workspace: Path, paths: Iterable[str], max_bytes: int) -> int:
    """Write the cache paths into the archive (replacing the old one); returns its size in bytes."""
    root = workspace.resolve()
    archive.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(dir=archive.parent, suffix=".part")
    try:
        with os.fdopen(fd, "wb") as out, tarfile.open(fileobj=out, mode="w") as tar:
            for path in paths:
                _add(tar, root, path)
        size = os.path.getsize(temporary)
        if size > max_bytes:
            raise CacheError(f"cache: {size:,} bytes is over the limit of {max_bytes:,}; not saved")
        os.replace(temporary, archive)
        return size
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)


def _add(tar: tarfile.TarFile, root: Path, path: str) -> None:
    pure = PurePosixPath(path.rstrip("/"))
    if pure.is_absolute() or ".." in pure.parts:
        raise CacheError(f"cache: {path!r} must be a relative path inside the workspace")
    source = root / pure
    if not source.exists():
        return
    if source.resolve() != root and root not in source.resolve().parents:
        raise CacheError(f"cache: {path!r} leads outside the workspace; refused")
    # Symlinks are stored as links (never followed), and the data filter checks them on restore.
    tar.add(source, arcname=pure.as_posix(), recursive=True)
