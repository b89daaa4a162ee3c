"""What a job can write is its own: a job that rewrites every file under its `.git` changes no later
checkout and no later planning, and a burst of pushes builds each commit once, from that commit.
Real pushes to a real server (git, Redis, Docker, worker processes)."""

from __future__ import annotations

import hashlib
import subprocess
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tests.support.engine import BUSYBOX, PYTHON
from tests.support.git import commit, git, make_repo
from tests.support.server import CiServer

# Run as root with the job's capabilities (DAC_OVERRIDE among them): every file under .git is
# rewritten in place, so a file that shares its inode with anything outside the job changes there.
TAMPER = """\
import os, sys, zlib

PWNED = b"image: BUSYBOX\\njobs:\\n  pwned: {script: ['echo PWNED']}\\n"
other = sys.argv[1].encode() + b"\\n"


def tampered(path, data):
    parts = path.split(os.sep)
    if len(parts) == 4 and parts[1] == "objects" and len(parts[2]) == 2:  # a loose object
        body = zlib.decompress(data)
        if body.startswith(b"blob "):
            return zlib.compress(b"blob %d\\0" % len(PWNED) + PWNED)
        return zlib.compress(body, 0)  # same object, other bytes: history still reads
    if path.endswith((".pack", ".idx", ".rev")):
        return data[::-1]
    return other  # refs, HEAD, packed-refs, config, index: all point elsewhere


rewritten = shared = 0
for directory, _, names in os.walk(".git"):
    for name in names:
        path = os.path.join(directory, name)
        if os.path.islink(path):
            continue
        shared += os.stat(path).st_nlink > 1
        with open(path, "rb") as f:
            data = f.read()
        with open(path, "r+b") as f:  # the same inode, not a new file
            f.write(tampered(path, data))
            f.truncate()
        rewritten += 1
print(f"rewrote {rewritten} files under .git, {shared} of them shared with another path")
""".replace("BUSYBOX", BUSYBOX)

CHECKER = f"""\
image: {PYTHON}
jobs:
  check:
    script:
      - python3 check.py
      - cat data.txt
      - echo commits $(git rev-list --count HEAD)
"""

CHECK = """\
import hashlib, os

# One database is enough here: what a job can reach is the engine's isolation, the same whatever the database.
ONE_DATABASE = True

digest = hashlib.sha256()
for directory, dirs, names in os.walk("."):
    dirs[:] = sorted(d for d in dirs if d != ".git")
    for name in sorted(names):
        path = os.path.relpath(os.path.join(directory, name))
        with open(path, "rb") as f:
            digest.update(path.encode() + b"\\0" + f.read() + b"\\0")
print("files digest", digest.hexdigest())
"""


def files_digest(root: Path) -> str:
    """The digest CHECK prints, of a work tree outside the server."""
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file() and ".git" not in p.relative_to(root).parts):
        relative = path.relative_to(root).as_posix()
        digest.update(relative.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def the_mirror_holding(ciserver: CiServer, sha: str) -> Path:
    for mirror in (ciserver.root / "data" / "mirrors").glob("*.git"):
        found = subprocess.run(["git", "-C", str(mirror), "cat-file", "-e", sha], capture_output=True)
        if found.returncode == 0:
            return mirror
    raise AssertionError(f"no mirror holds {sha}")


def test_a_job_that_rewrites_its_git_directory_changes_no_later_checkout_or_planning(
    ciserver: CiServer, tmp_path: Path
) -> None:
    name, repo = f"octo/t{uuid.uuid4().hex[:10]}", tmp_path / "repo"
    # Over git's unpack limit (100 objects): the mirror's first fetch keeps a pack.
    files = {f"src/f{n}.txt": f"file {n}\n" for n in range(120)}
    first = make_repo(
        repo,
        {
            **files,
            "data.txt": "the committed data\n",
            "pipelines.yml": f"image: {BUSYBOX}\njobs:\n  a: {{script: ['true']}}\n",
        },
    )
    ciserver.add_project(name, repo)
    assert ciserver.wait_build(ciserver.push_github(name, first).json()["build_id"])["status"] == "success"

    git(repo, "checkout", "-q", "-b", "other")
    checker = commit(repo, {"check.py": CHECK, "pipelines.yml": CHECKER}, "check what was checked out")
    expected = files_digest(repo)
    git(repo, "checkout", "-q", "main")
    tamper = f"image: {PYTHON}\njobs:\n  tamper: {{script: ['python3 tamper.py {first}']}}\n"
    attack = commit(repo, {"tamper.py": TAMPER, "pipelines.yml": tamper}, "rewrite everything under .git")
    build = ciserver.wait_build(ciserver.push_github(name, attack).json()["build_id"], timeout=120)
    tamper_log = ciserver.log(build["jobs"][0]["id"])
    assert build["status"] == "success", (build, tamper_log)
    assert "rewrote" in tamper_log and ", 0 of them shared with another path" in tamper_log, tamper_log

    # Another branch, whose objects the mirror held while the job ran, builds from what was committed.
    build = ciserver.wait_build(
        ciserver.push_github(name, checker, ref="refs/heads/other").json()["build_id"], timeout=120
    )
    assert [job["name"] for job in build["jobs"]] == ["check"], build
    log = ciserver.log(build["jobs"][0]["id"])
    assert build["status"] == "success", (build, log)
    assert f"files digest {expected}" in log and "the committed data" in log and "commits 2" in log, log

    mirror = the_mirror_holding(ciserver, checker)
    fsck = subprocess.run(
        ["git", "-C", str(mirror), "fsck", "--full", "--strict"], capture_output=True, text=True
    )
    assert fsck.returncode == 0, fsck.stderr
    assert git(mirror, "rev-parse", "refs/heads/main", "refs/heads/other").split() == [attack, checker]


def test_a_burst_of_fresh_commits_builds_each_push_once_from_its_own_commit(
    ciserver: CiServer, tmp_path: Path
) -> None:
    """Twenty fresh commits pushed in a burst, each to a branch of its own, on two workers: each job
    prints a file only its commit has."""
    name, repo = f"octo/b{uuid.uuid4().hex[:10]}", tmp_path / "repo"
    pipeline = f"image: {BUSYBOX}\njobs:\n  show: {{script: ['cat unique.txt']}}\n"
    make_repo(repo, {"pipelines.yml": pipeline})
    ciserver.add_project(name, repo)
    pushes: dict[str, tuple[str, str]] = {}

    def push(branch: str) -> int:
        response = ciserver.push_github(name, pushes[branch][0], ref=f"refs/heads/{branch}")
        assert response.status_code == 202, response.text
        return response.json()["build_id"]

    # Each webhook leaves as soon as its commit exists, while the next commits are being made: the
    # workers fetch while new objects keep arriving.
    with ThreadPoolExecutor(20) as pool:
        sent = {}
        for n in range(20):
            branch, token = f"b{n}", uuid.uuid4().hex
            git(repo, "checkout", "-q", "-b", branch, "main")
            pushes[branch] = (commit(repo, {"unique.txt": f"{token}\n"}, f"commit {n}"), token)
            sent[branch] = pool.submit(push, branch)
        build_ids = {branch: future.result() for branch, future in sent.items()}
    for branch, build_id in build_ids.items():
        build = ciserver.wait_build(build_id, timeout=180)
        sha, token = pushes[branch]
        assert (build["status"], build["sha"], build["branch"]) == ("success", sha, branch), build["error"]
        assert token in ciserver.log(build["jobs"][0]["id"])
    assert ciserver.builds_of(name)["total"] == 20
