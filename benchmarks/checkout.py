#!/usr/bin/env python3
"""What a job's checkout costs: `checkout_at_sha` from a warm mirror into a fresh workspace, for a
small repository and a big one (made with `git fast-import`: 50k commits, a few thousand files).

Prints a table: median and p90 over repeated checkouts; the two ways to make the workspace's
`.git` (hard links to the mirror's objects, as before, or copies, as now), timed in turns so that
both see the same load; and how much of the workspace's `.git` is its own or shared with the
mirror. `--code DIR` measures the `workers.checkout` of another tree (an export of an older commit:
`git archive 499d747 | tar -x -C DIR`). Run from the project root:

    .venv/bin/python benchmarks/checkout.py [--runs 20] [--repos /tmp/repos] [--code DIR]
"""

from __future__ import annotations

import argparse
import importlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def fast_import(path: Path, commits: int, files: int) -> str:
    """A repository whose first commit adds `files` files and each later one changes one of them."""
    path.mkdir(parents=True)
    subprocess.run(["git", "init", "-q", "-b", "main", str(path)], check=True)
    proc = subprocess.Popen(["git", "-C", str(path), "fast-import", "--quiet"], stdin=subprocess.PIPE)
    assert proc.stdin is not None
    out = proc.stdin

    def blob(text: str) -> bytes:
        data = text.encode()
        return b"data %d\n%s\n" % (len(data), data)

    pipeline = "image: ciserver-test/busybox:latest\njobs:\n  a: {script: ['true']}\n"
    for n in range(commits):
        out.write(b"commit refs/heads/main\n")
        out.write(b"committer Dev <dev@example.org> %d +0000\n" % (1_700_000_000 + n))
        out.write(b"data %d\ncommit %d\n" % (len(str(n)) + 7, n))
        if n == 0:
            out.write(b"M 100644 inline pipelines.yml\n" + blob(pipeline))
            for f in range(files):
                out.write(b"M 100644 inline src/d%d/f%d.py\n" % (f % 50, f) + blob(f"# file {f}\n" * 40))
        else:
            f = n % files
            out.write(b"M 100644 inline src/d%d/f%d.py\n" % (f % 50, f) + blob(f"# file {f} v{n}\n" * 40))
        out.write(b"\n")
    out.close()
    if proc.wait() != 0:
        raise SystemExit("git fast-import failed")
    subprocess.run(["git", "-C", str(path), "repack", "-adq"], check=True)
    return subprocess.run(
        ["git", "-C", str(path), "rev-parse", "HEAD"], check=True, capture_output=True, text=True
    ).stdout.strip()


def sizes(path: Path) -> tuple[int, int]:
    """Bytes under `path` in files of its own, and in files hard-linked with something else."""
    own = shared = 0
    for p in path.rglob("*"):
        if p.is_file() and not p.is_symlink():
            st = p.stat()
            if st.st_nlink > 1:
                shared += st.st_size
            else:
                own += st.st_size
    return own, shared


CLONES = {
    "clone, hard links (before)": ["--no-checkout"],
    "clone, copies (after)": ["--no-checkout", "--no-hardlinks", "--template="],
}


def measure(checkout: object, repo: Path, sha: str, work: Path, runs: int) -> dict[str, object]:
    """Medians and p90s of the whole checkout_at_sha and of each way to clone, taken in turns so
    that both ways see the same load; and the workspace's .git sizes."""
    mirror = work / f"{repo.name}-mirror.git"
    try:
        from ciserver.clone_urls import Remote

        remote: object = Remote(str(repo))
    except ImportError:  # code from before clone URLs had a Remote
        remote = str(repo)
    checkout.ensure_commit(mirror, remote, sha, allow_local=True)  # type: ignore[attr-defined]
    times: dict[str, list[float]] = {"checkout_at_sha": [], **{name: [] for name in CLONES}}
    size = (0, 0)
    for n in range(runs + 1):
        workspace = work / f"ws-{repo.name}-{n}"
        start = time.perf_counter()
        checkout.checkout_at_sha(mirror, sha, workspace)  # type: ignore[attr-defined]
        elapsed = {"checkout_at_sha": time.perf_counter() - start}
        size = sizes(workspace / ".git")
        shutil.rmtree(workspace)
        for name, options in CLONES.items():
            start = time.perf_counter()
            subprocess.run(["git", "clone", "-q", *options, "--", str(mirror), str(workspace)], check=True)
            elapsed[name] = time.perf_counter() - start
            shutil.rmtree(workspace)
        if n:  # the first round warms the page cache
            for name, value in elapsed.items():
                times[name].append(value)
    result: dict[str, object] = {"size": size}
    for name, values in times.items():
        values.sort()
        result[name] = (statistics.median(values), values[int(len(values) * 0.9) - 1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--commits", type=int, default=50_000)
    parser.add_argument("--files", type=int, default=3_000)
    parser.add_argument("--code", type=Path, default=ROOT, help="the tree whose workers.checkout is measured")
    parser.add_argument("--repos", type=Path, help="keep the generated repositories here (reused)")
    args = parser.parse_args()
    sys.path.insert(0, str(args.code.resolve()))
    checkout = importlib.import_module("workers.checkout")

    with tempfile.TemporaryDirectory() as tmp:
        repos = args.repos or Path(tmp) / "repos"
        shapes = {"small": (20, 30), "big": (args.commits, args.files)}
        rows = []
        for name, (commits, files) in shapes.items():
            repo = repos / f"{name}-{commits}x{files}"
            if not (repo / "HEAD").exists() and not (repo / ".git").exists():
                fast_import(repo, commits, files)
            sha = subprocess.run(
                ["git", "-C", str(repo), "rev-parse", "HEAD"], check=True, capture_output=True, text=True
            ).stdout.strip()
            rows.append((name, commits, files, measure(checkout, repo, sha, Path(tmp), args.runs)))

    print(f"code: {args.code.resolve()}; load average over the last 5 minutes: {os.getloadavg()[1]:.1f}")
    columns = ["checkout_at_sha", *CLONES]
    print("| repository | commits | files | " + " | ".join(f"{c}, median / p90" for c in columns), end="")
    print(" | .git, own | .git, shared with the mirror |")
    print("|---" * (len(columns) + 5) + "|")
    for name, commits, files, result in rows:
        cells = [f"{m * 1000:.1f} / {p * 1000:.1f} ms" for m, p in (result[c] for c in columns)]  # type: ignore[misc]
        own, shared = result["size"]  # type: ignore[misc]
        print(f"| {name} | {commits:,} | {files:,} | " + " | ".join(cells), end="")
        print(f" | {own / 2**20:.1f} MiB | {shared / 2**20:.1f} MiB |")


if __name__ == "__main__":
    main()
