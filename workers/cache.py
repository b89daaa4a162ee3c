"""The per-project cache: a tar of a job's cache paths, saved after it succeeds under its rendered
key, restored into the workspace of the next job with the same key.

Caches are kept per ref, as GitLab keeps protected and unprotected caches apart: a job writes only
its own ref's archive, and reads its own, or else the default branch's. So a feature branch can
neither poison nor break what the default branch restores.

Archives are kept in the cache store (ciserver.storage), which shows a reader a whole archive or none;
the size limit holds while writing, so a sparse 10 TB file is refused at once and nothing partial
stays. An archive is unpacked into a staging directory with tarfile's "data" filter, symlinks last,
and moved into the workspace only once all of it unpacked: one that cannot be restored leaves
nothing behind, and the job runs without it.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import tarfile
import tempfile
from collections.abc import Iterable
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from ciserver.pipeline import cache_key_parts
from ciserver.storage import BlobStore
from workers.workspace_glob import WalkTooLarge, glob_workspace

CHUNK = 1024 * 1024
MAX_HASHED_BYTES = 2 * 1024**3  # hashFiles reads at most this much, all patterns together


class CacheError(Exception):
    """A cache that cannot be saved or restored (too large, a path outside the workspace)."""


def render_key(template: str, workspace: Path) -> str:
    """The key with every `{{ hashFiles('glob', ...) }}` replaced by the hash of the files it names
    (the loader has already refused any other template)."""
    return "".join(
        part if isinstance(part, str) else hash_files(workspace, part.patterns)
        for part in cache_key_parts(template)
    )


def hash_files(workspace: Path, patterns: Iterable[str]) -> str:
    """SHA-256 over the SHA-256 of each matching regular file, in path order (GitHub's hashFiles);
    empty when nothing matches, so the key still renders. A link counts as the file it names when
    that is inside the workspace; symlinked directories are never walked."""
    root = workspace.resolve()
    files: set[Path] = set()
    try:
        for pattern in patterns:
            for path in glob_workspace(root, pattern):
                resolved = path.resolve()
                if root in resolved.parents and resolved.is_file():
                    files.add(resolved)
    except WalkTooLarge as exc:
        raise CacheError(f"cache: hashFiles: {exc}") from None
    if not files:
        return ""
    outer = hashlib.sha256()
    left = MAX_HASHED_BYTES
    for path in sorted(files):
        inner = hashlib.sha256()
        with path.open("rb") as f:
            while chunk := f.read(CHUNK):
                left -= len(chunk)
                if left < 0:
                    raise CacheError(f"cache: hashFiles reads over {MAX_HASHED_BYTES:,} bytes")
                inner.update(chunk)
        outer.update(inner.digest())
    return outer.hexdigest()


def archives(project_id: int, key: str, ref: str, default_branch: str | None) -> list[tuple[str, str]]:
    """The cache store's keys where a job of `ref` looks for the cache of `key`, in order, each with
    whose it is (for the log): its own ref's, the one it saves to, then the default branch's (main
    when not known)."""
    own = [(archive_key(project_id, ref, key), "")]
    default_ref = f"refs/heads/{default_branch or 'main'}"
    if ref == default_ref:
        return own
    return [*own, (archive_key(project_id, default_ref, key), f" of {default_ref}")]


def archive_key(project_id: int, ref: str, key: str) -> str:
    """Where a project's cache of one key for one ref lives in the cache store; ref and key are
    hashed, so they may hold any character."""
    return f"{project_id}/{ref_folder(ref)}/{hashlib.sha256(key.encode()).hexdigest()[:40]}.tar"


def ref_folder(ref: str) -> str:
    """A folder name for a ref (which may hold any character git allows): a cache's, an image build's."""
    return hashlib.sha256(ref.encode()).hexdigest()[:32]


def restore(store: BlobStore, archive: str, workspace: Path) -> bool:
    """Unpack the archive into the workspace; False when there is none (a miss). CacheError, with
    nothing written into the workspace, when it cannot be restored whole."""
    with store.reader(archive) as source:
        if source is None:
            return False
        staging = Path(tempfile.mkdtemp(prefix=".ciserver-cache-", dir=workspace))
        try:
            try:
                _unpack(source, staging)
            except (tarfile.TarError, OSError) as exc:
                raise CacheError(f"cache: the archive cannot be restored: {exc}") from None
            _move_into(staging, workspace)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return True


def _unpack(archive: BinaryIO, staging: Path) -> None:
    """Into an empty directory, links last: while files are written no link exists that they could
    be written through, and no member may sit below a link of the archive.

    A link may point anywhere (a virtualenv's `bin/python -> /usr/bin/python3`): it is only ever
    followed inside the job's container, and the worker follows none (see artifacts, hashFiles,
    image builds). So links get tarfile's "tar" filter, which checks their names, and everything
    else its "data" filter, which also refuses devices and pipes."""
    with tarfile.open(fileobj=archive) as tar:
        members = tar.getmembers()
        links = {PurePosixPath(m.name) for m in members if m.issym()}
        for member in members:
            if any(parent in links for parent in PurePosixPath(member.name).parents):
                raise tarfile.OutsideDestinationError(member, member.name)
        tar.extractall(staging, members=[m for m in members if not m.issym()], filter="data")
        tar.extractall(staging, members=[m for m in members if m.issym()], filter="tar")


def _move_into(source: Path, target: Path) -> None:
    """Merge a directory tree into another by renames, replacing what is in the way (as unpacking
    would) and never following a link found in the target."""
    for entry in os.scandir(source):
        destination = target / entry.name
        if entry.is_dir(follow_symlinks=False) and destination.is_dir() and not destination.is_symlink():
            _move_into(Path(entry.path), destination)
            continue
        if destination.is_dir() and not destination.is_symlink():
            shutil.rmtree(destination)
        elif os.path.lexists(destination):
            destination.unlink()
        os.rename(entry.path, destination)


def save(store: BlobStore, archive: str, workspace: Path, paths: Iterable[str], max_bytes: int) -> int:
    """Write the cache paths into the archive (replacing the old one, which readers see until the new
    one is whole); returns its size in bytes."""
    root = workspace.resolve()
    sources = [(path, _source(root, path)) for path in paths]
    sources = [(path, source) for path, source in sources if os.path.lexists(source)]
    size = sum(_size(source) for _, source in sources)
    if size > max_bytes:
        raise _over_limit(max_bytes, f"the paths hold {size:,} bytes")
    with store.writer(archive) as out:
        bounded = _Bounded(out, max_bytes)
        with tarfile.open(fileobj=bounded, mode="w") as tar:  # type: ignore[call-overload]
            for path, source in sources:
                # Symlinks are stored as links (never followed), and restoring checks them.
                tar.add(source, arcname=PurePosixPath(path.rstrip("/")).as_posix(), recursive=True)
        return bounded.written


def _source(root: Path, path: str) -> Path:
    pure = PurePosixPath(path.rstrip("/"))
    if pure.is_absolute() or ".." in pure.parts:
        raise CacheError(f"cache: {path!r} must be a relative path inside the workspace")
    source = root / pure
    if os.path.lexists(source) and source.resolve() != root and root not in source.resolve().parents:
        raise CacheError(f"cache: {path!r} leads outside the workspace; refused")
    return source


def _size(source: Path) -> int:
    """Bytes of the regular files at or under `source`, by their size (a sparse file counts whole,
    as tar would write it); links are not followed."""
    if not source.is_dir() or source.is_symlink():
        return source.lstat().st_size if source.is_file() and not source.is_symlink() else 0
    total = 0
    for directory, _dirs, files in os.walk(source):  # does not enter symlinked directories
        for name in files:
            info = os.lstat(os.path.join(directory, name))
            total += info.st_size if stat.S_ISREG(info.st_mode) else 0
    return total


def _over_limit(max_bytes: int, why: str) -> CacheError:
    return CacheError(
        f"cache: {why}, over the limit of {max_bytes:,} bytes (CISERVER_CACHE_MAX_BYTES); not saved"
    )


class _Bounded:
    """A file that refuses to grow past `limit` bytes: files may change while tar reads them."""

    def __init__(self, out: BinaryIO, limit: int) -> None:
        self.out, self.limit, self.written = out, limit, 0

    def write(self, data: bytes) -> int:
        self.written += len(data)
        if self.written > self.limit:
            raise _over_limit(self.limit, "the archive grew")
        return self.out.write(data)

    def tell(self) -> int:
        return self.written
