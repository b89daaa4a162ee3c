"""Globs over a job's workspace (artifact paths, hashFiles), walked without following a link.

A workspace holds what a pusher committed and what a job wrote, symlinks included: a walk that
entered a linked directory could list the whole host, and one through a link loop would never end.
Here no symlinked directory is entered, matched links are given back as links (the caller decides
what one may name, once resolved), and the walk and its matching are bounded.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path, PurePosixPath

from ciserver.pipeline import MatchBudget, MatchTooCostly, glob_match, is_glob

MAX_ENTRIES = 100_000  # directory entries one pattern may visit
MATCH_STEPS = 20_000_000  # glob steps one pattern may take over them (a few seconds at most)


class WalkTooLarge(Exception):
    """The pattern would visit more of the workspace than a worker gives one pattern."""


def glob_workspace(root: Path, pattern: str) -> Iterator[Path]:
    """Paths under `root` whose relative path matches `pattern`, files, directories and links alike,
    in no promised order; a pattern without glob characters names its one path, if it exists (a
    link on its way is the caller's to check, resolving it).

    Raises WalkTooLarge past MAX_ENTRIES entries or MATCH_STEPS steps of matching.
    """
    if not is_glob(pattern):
        if os.path.lexists(root / pattern):
            yield root / pattern
        return
    start = root.joinpath(*_literal_directories(pattern))
    if not _no_link_on_the_way(root, start) or not start.is_dir():
        return
    budget = MatchBudget(MATCH_STEPS)
    visited = 0
    pending = [start]
    while pending:
        directory = pending.pop()
        try:
            entries = list(os.scandir(directory))
        except OSError:
            continue  # vanished or unreadable: it holds nothing to match
        for entry in entries:
            visited += 1
            if visited > MAX_ENTRIES:
                raise WalkTooLarge(f"{pattern!r} visits over {MAX_ENTRIES:,} files and directories")
            relative = os.path.relpath(entry.path, root).replace(os.sep, "/")
            try:
                if glob_match(pattern, relative, budget):
                    yield Path(entry.path)
            except MatchTooCostly as exc:
                raise WalkTooLarge(f"{pattern!r} is too costly to match: {exc}") from None
            if entry.is_dir(follow_symlinks=False):
                pending.append(Path(entry.path))


def _literal_directories(pattern: str) -> list[str]:
    """The leading directories of the pattern that hold no glob character: the walk starts there."""
    parts = PurePosixPath(pattern).parts[:-1]
    literal: list[str] = []
    for part in parts:
        if is_glob(part):
            break
        literal.append(part)
    return literal


def _no_link_on_the_way(root: Path, path: Path) -> bool:
    """Whether no directory from `root` down to `path` (inclusive) is a symlink."""
    current = root
    for part in path.relative_to(root).parts:
        current = current / part
        if current.is_symlink():
            return False
    return True
