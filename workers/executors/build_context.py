"""The build context of an image build: the directory and Dockerfile a pipeline names, resolved in
the checked-out workspace after every link, and what COPY and ADD take from it, packed as tar
archives for the engine.

Only files of the workspace ever reach the engine. A context, Dockerfile or .dockerignore that
leads out of the workspace is refused with the path named, and so is any link in the context that
leads out (unless .dockerignore leaves it out). Files are opened without following links, and links
are packed as links, so what is checked is what is sent.
"""

from __future__ import annotations

import hashlib
import os
import posixpath
import re
import stat
import tarfile
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from docker.utils.build import PatternMatcher

from workers.executors.base import BuildFailed

SPOOL = 8 * 1024 * 1024  # an archive this large goes to disk rather than memory
MAX_IGNORE_FILE = 256 * 1024
_GLOB = re.compile(r"[*?\[]")

Owner = tuple[int, int]  # uid and gid
Exists = Callable[[str], str | None]  # an image path -> "dir", "file" or None when it is not there


@dataclass
class Packed:
    """A tar archive for the engine, rooted at `/`, and the digest of what it holds (names, modes,
    owners, contents; not times, so a fresh checkout of the same files has the same digest)."""

    file: IO[bytes]
    digest: str
    entries: int


def inside(root: Path, path: Path) -> bool:
    return path == root or root in path.parents


class BuildContext:
    """The context directory of one image build, checked once and then read by COPY and ADD."""

    def __init__(self, workspace: Path, context: str, dockerfile: str) -> None:
        self.workspace = workspace.resolve()
        self.root = self._resolve(context, "image_build.context", context)
        if not self.root.is_dir():
            raise BuildFailed(f"image_build.context: {context!r} is not a directory of the repository")
        dockerfile_path = self._resolve(
            posixpath.join(context, dockerfile), "image_build.dockerfile", dockerfile
        )
        if not dockerfile_path.is_file():
            raise BuildFailed(f"the Dockerfile {dockerfile!r} is not in the build context {context!r}")
        self.dockerfile_text = _read_text(dockerfile_path, "image_build.dockerfile")
        self.included = self._included(dockerfile_path)

    def _resolve(self, relative: str, key: str, written: str) -> Path:
        """workspace/relative with every link resolved, refused (naming `written`) when it leaves."""
        path = (self.workspace / relative).resolve()
        if not inside(self.workspace, path):
            raise BuildFailed(f"{key}: {written!r} leads outside the workspace (through a link); refused")
        return path

    def _included(self, dockerfile: Path) -> set[str]:
        """Every path of the context .dockerignore keeps, each link checked to stay in the workspace."""
        ignore = self.root / ".dockerignore"
        patterns: list[str] = []
        if ignore.is_symlink() or ignore.exists():
            resolved = self._resolve(
                str(ignore.relative_to(self.workspace)), "the build context", ".dockerignore"
            )
            text = _read_text(resolved, ".dockerignore", limit=MAX_IGNORE_FILE)
            patterns = [
                line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")
            ]
        included = set(PatternMatcher(patterns).walk(str(self.root)))
        for relative in sorted(included):
            path = self.root / relative
            if path.is_symlink() and not inside(self.workspace, path.resolve()):
                raise BuildFailed(
                    f"the build context holds {relative!r}, a link leading outside the workspace "
                    f"(to {os.readlink(path)!r}); refused. Remove it, or list it in .dockerignore"
                )
        return included

    def matches(self, source: str) -> list[str]:
        """The context paths a COPY source names: a path, or a pattern matched as Go's filepath.Match
        matches it (`*` never crosses a '/'). "." is the whole context."""
        clean = posixpath.normpath("/" + source).lstrip("/") or "."
        if clean == ".":
            return ["."]
        if not _GLOB.search(clean):
            found = [clean] if clean in self.included else []
        else:
            pattern = _go_pattern(clean)
            found = sorted(path for path in self.included if pattern.fullmatch(path))
        if not found:
            raise BuildFailed(
                f"COPY failed: {source!r} is not in the build context (or .dockerignore leaves it out)"
            )
        return found

    def pack(self, sources: list[str], dest: str, owner: Owner | None, exists: Exists) -> Packed:
        """The archive that puts `sources` (paths from `matches`) at `dest` in the image, as COPY does:
        a directory's contents go into dest, a file to dest or (dest being a directory) into it, and
        missing parent directories are made (0755, owned like the files)."""
        writer = _Writer(owner)
        dest_dir = dest.endswith("/") or len(sources) > 1
        target = posixpath.normpath(dest)
        for source in sources:
            path = self._follow_top(source)
            if path.is_dir():
                writer.directories(target, exists)
                for relative in self._below(path):
                    writer.add(
                        self.root / relative,
                        posixpath.join(target, posixpath.relpath(relative, _rel(self.root, path))),
                    )
            else:
                into = dest_dir or exists(target) == "dir"
                name = posixpath.join(target, posixpath.basename(source)) if into else target
                writer.directories(posixpath.dirname(name), exists)
                writer.add(path, name)
        return writer.close()

    def pack_archive(self, source: str, dest: str, owner: Owner | None, exists: Exists) -> Packed | None:
        """ADD of a local tar archive (plain or compressed): its members unpacked under dest. None when
        the source is not an archive (ADD then copies it as COPY does)."""
        path = self._follow_top(source)
        if not path.is_file() or not tarfile.is_tarfile(path):
            return None
        writer = _Writer(owner, keep_owner=owner is None)
        target = posixpath.normpath(dest)
        writer.directories(target, exists)
        with tarfile.open(path, mode="r:*") as archive:
            for member in archive:
                relative = posixpath.normpath("/" + member.name).lstrip("/")
                if relative not in ("", "."):
                    writer.add_member(archive, member, posixpath.join(target, relative), source, target)
        return writer.close()

    def _follow_top(self, source: str) -> Path:
        """A source as COPY takes it: a link named directly is followed, but only within the context."""
        path = self.root if source == "." else self.root / source
        resolved = path.resolve()
        if not inside(self.root, resolved):
            raise BuildFailed(f"COPY failed: {source!r} is a link to outside the build context")
        return resolved

    def _below(self, directory: Path) -> Iterator[str]:
        """Context paths under `directory` (itself excluded), parents before children."""
        prefix = _rel(self.root, directory)
        for relative in sorted(self.included):
            if prefix == "." or relative.startswith(prefix + "/"):
                yield relative


def _rel(root: Path, path: Path) -> str:
    return path.relative_to(root).as_posix() if path != root else "."


def _read_text(path: Path, key: str, limit: int = 1024 * 1024) -> str:
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    with os.fdopen(fd, "rb") as file:
        data = file.read(limit + 1)
    if len(data) > limit:
        raise BuildFailed(f"{key}: larger than {limit:,} bytes")
    try:
        return data.decode()
    except UnicodeDecodeError:
        raise BuildFailed(f"{key}: not UTF-8 text") from None


def _go_pattern(pattern: str) -> re.Pattern[str]:
    """Go's filepath.Match as a regular expression: `*` and `?` stop at '/', `[...]` (with `^` or `!`
    to negate) is one character, `\\` escapes."""
    out, i = [], 0
    while i < len(pattern):
        char = pattern[i]
        if char == "*":
            out.append("[^/]*")
        elif char == "?":
            out.append("[^/]")
        elif char == "[" and (end := pattern.find("]", i + 1)) > i + 1:
            body = pattern[i + 1 : end]
            negate = body[0] in "^!"
            body = re.sub(r"([\\\]\[^])", r"\\\1", body[1:] if negate else body)
            out.append(f"[{'^' if negate else ''}{body}]")
            i = end
        elif char == "\\" and i + 1 < len(pattern):
            i += 1
            out.append(re.escape(pattern[i]))
        else:
            out.append(re.escape(char))
        i += 1
    return re.compile("".join(out))


class _Writer:
    """Writes tar entries and the digest of what they hold."""

    def __init__(self, owner: Owner | None, *, keep_owner: bool = False) -> None:
        self.owner, self.keep_owner = owner, keep_owner
        # Both stay open: the archive is handed to the engine by Packed.
        self.file: IO[bytes] = tempfile.SpooledTemporaryFile(max_size=SPOOL)  # noqa: SIM115
        self.tar = tarfile.open(fileobj=self.file, mode="w", format=tarfile.PAX_FORMAT)  # noqa: SIM115
        self.digest = hashlib.sha256()
        self.made: set[str] = set()
        self.entries = 0

    def directories(self, path: str, exists: Exists) -> None:
        """Entries for the directories on the way to `path` that the image lacks (never for one it
        has: an entry would change that directory's mode and owner)."""
        missing = []
        while path not in ("/", "") and path not in self.made:
            kind = exists(path)
            if kind == "dir":
                break
            if kind == "file":
                raise BuildFailed(f"COPY failed: {path} is a file in the image, not a directory")
            missing.append(path)
            path = posixpath.dirname(path)
        for directory in reversed(missing):
            info = tarfile.TarInfo(directory.lstrip("/"))
            info.type, info.mode = tarfile.DIRTYPE, 0o755
            self._write(info)

    def add(self, path: Path, name: str) -> None:
        """One file, directory or link of the context at `name` in the image."""
        status = os.lstat(path)
        info = tarfile.TarInfo(name.lstrip("/"))
        info.mode, info.mtime = stat.S_IMODE(status.st_mode), int(status.st_mtime)
        if stat.S_ISLNK(status.st_mode):
            info.type, info.linkname = tarfile.SYMTYPE, os.readlink(path)
            self._write(info)
        elif stat.S_ISDIR(status.st_mode):
            info.type = tarfile.DIRTYPE
            self._write(info)
        elif stat.S_ISREG(status.st_mode):
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
            with os.fdopen(fd, "rb") as source:
                info.size = os.fstat(source.fileno()).st_size
                self._write(info, source)
        else:
            raise BuildFailed(f"COPY failed: {name} is not a file, directory or link (a device or socket?)")

    def add_member(
        self, archive: tarfile.TarFile, member: tarfile.TarInfo, name: str, source: str, root: str
    ) -> None:
        """One member of an archive (an ADDed file, or files of another image) at `name`; a hard link
        is taken to point into the same archive, placed under `root` like the rest."""
        if not (member.isfile() or member.isdir() or member.issym() or member.islnk()):
            raise BuildFailed(f"{source} holds {member.name!r}, a device or other special file; refused")
        info = tarfile.TarInfo(name.lstrip("/"))
        info.type, info.mode, info.mtime = member.type, member.mode & 0o7777, int(member.mtime)
        info.uid, info.gid = member.uid, member.gid
        if member.islnk():
            info.linkname = posixpath.join(
                root, posixpath.normpath("/" + member.linkname).lstrip("/")
            ).lstrip("/")
        elif member.issym():
            info.linkname = member.linkname
        data = archive.extractfile(member) if member.isfile() else None
        info.size = member.size if data is not None else 0
        self._write(info, data)

    def _write(self, info: tarfile.TarInfo, data: IO[bytes] | None = None) -> None:
        if not self.keep_owner:
            info.uid, info.gid = self.owner or (0, 0)
        info.uname = info.gname = ""
        if info.isdir():
            self.made.add("/" + info.name)
        content = hashlib.sha256()
        if data is not None:
            data = _Hashing(data, content)
        self.tar.addfile(info, data)
        record = (
            info.name,
            info.type.decode(),
            info.mode,
            info.uid,
            info.gid,
            info.linkname,
            content.hexdigest(),
        )
        self.digest.update(repr(record).encode() + b"\n")
        self.entries += 1

    def close(self) -> Packed:
        self.tar.close()
        self.file.seek(0)
        return Packed(self.file, self.digest.hexdigest(), self.entries)


class _Hashing:
    """A reader that hashes what tarfile reads through it."""

    def __init__(self, source: IO[bytes], digest: hashlib._Hash) -> None:
        self.source, self.hash = source, digest

    def read(self, size: int = -1) -> bytes:
        data = self.source.read(size)
        self.hash.update(data)
        return data


def pack_directories(path: str, exists: Exists) -> Packed:
    """An archive that makes directory `path` (and its missing parents): WORKDIR's."""
    writer = _Writer(None)
    writer.directories(path, exists)
    return writer.close()


Fetch = Callable[[str], "Iterator[bytes] | None"]  # an image path -> its `docker cp` archive, or None


def pack_from_image(
    fetch: Fetch, sources: list[str], dest: str, owner: Owner | None, exists: Exists
) -> Packed:
    """COPY --from: files of another stage or image (`fetch` reads them) put at `dest` as COPY puts
    files of the context there. A pattern may use wildcards in its last part only."""
    writer = _Writer(owner)
    target = posixpath.normpath(dest)
    for source in sources:
        clean = posixpath.normpath("/" + source)
        wildcard = bool(_GLOB.search(posixpath.basename(clean)))
        if _GLOB.search(posixpath.dirname(clean)):
            raise BuildFailed(f"COPY --from: {source!r}: wildcards are supported in the last part only")
        fetched = posixpath.dirname(clean) if wildcard else clean
        stream = fetch(fetched)
        if stream is None:
            raise BuildFailed(f"COPY --from: {source!r} is not in that stage or image")
        pattern = _go_pattern(posixpath.basename(clean)) if wildcard else None
        with tarfile.open(fileobj=_Chunks(stream), mode="r|") as archive:
            _copy_members(writer, archive, pattern, dest, target, source, exists)
    return writer.close()


def _copy_members(
    writer: _Writer,
    archive: tarfile.TarFile,
    pattern: re.Pattern[str] | None,
    dest: str,
    target: str,
    source: str,
    exists: Exists,
) -> None:
    """Place an engine archive's members: with a pattern, the matching children of the fetched
    directory (each into dest); without, the fetched path (a directory's contents into dest)."""
    top: str | None = None
    top_is_dir = False
    for member in archive:
        parts = member.name.strip("/").split("/")
        if pattern is not None:
            if len(parts) < 2 or not pattern.fullmatch(parts[1]):
                continue
            relative = "/".join(parts[1:])
            writer.directories(target, exists)
            writer.add_member(archive, member, posixpath.join(target, relative), source, target)
            continue
        if top is None:
            top, top_is_dir = parts[0], member.isdir()
            if top_is_dir:
                writer.directories(target, exists)
                continue
            into = dest.endswith("/") or exists(target) == "dir"
            name = posixpath.join(target, top) if into else target
            writer.directories(posixpath.dirname(name), exists)
            writer.add_member(archive, member, name, source, posixpath.dirname(name))
            continue
        if top_is_dir:
            writer.add_member(archive, member, posixpath.join(target, "/".join(parts[1:])), source, target)


class _Chunks:
    """A file-like reader over an iterator of byte chunks (an engine's archive stream)."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self.chunks, self.buffer = iter(chunks), b""

    def read(self, size: int = -1) -> bytes:
        while size < 0 or len(self.buffer) < size:
            chunk = next(self.chunks, None)
            if chunk is None:
                break
            self.buffer += chunk
        if size < 0:
            data, self.buffer = self.buffer, b""
        else:
            data, self.buffer = self.buffer[:size], self.buffer[size:]
        return data
