"""Caches through real pushes: kept per ref, so a feature branch can neither poison nor break what the
default branch restores; an archive that cannot be restored is skipped, not fatal; links come back."""

from __future__ import annotations

import uuid
from pathlib import Path

from tests.support.engine import BUSYBOX
from tests.support.git import commit, git, make_repo
from tests.support.server import CiServer

# Prints what the cache held, then puts $CONTENT in it (saved when the job succeeds).
PIPELINE = f"""\
image: {BUSYBOX}
jobs:
  deps:
    script:
      - 'echo "restored: $(cat deps/state 2>/dev/null || echo nothing)"'
      - mkdir -p deps && cp CONTENT deps/state
    cache: {{key: "deps-{{{{ hashFiles('lock') }}}}", paths: [deps]}}
"""


class Repo:
    def __init__(self, server: CiServer, path: Path) -> None:
        self.server, self.path = server, path
        self.name = f"octo/c{uuid.uuid4().hex[:10]}"
        make_repo(path, {"pipelines.yml": PIPELINE, "lock": "same lock everywhere\n", "CONTENT": "main-1\n"})
        server.add_project(self.name, path)

    def push(self, content: str, branch: str = "main", files: dict[str, str] | None = None) -> str:
        """Commit CONTENT on `branch`, push it, and return the deps job's log once the build ended."""
        if branch != "main":
            git(self.path, "checkout", "-q", "-B", branch)
        sha = commit(self.path, {"CONTENT": content + "\n", **(files or {})}, f"{branch}: {content}")
        git(self.path, "checkout", "-q", "main")
        response = self.server.push_github(self.name, sha, ref=f"refs/heads/{branch}")
        assert response.status_code == 202, response.text
        build = self.server.wait_build(response.json()["build_id"])
        assert build["status"] == "success", (build, self.server.log(build["jobs"][0]["id"]))
        return self.server.log(build["jobs"][0]["id"])


def test_a_feature_branch_cannot_poison_the_default_branchs_cache(ciserver: CiServer, tmp_path: Path) -> None:
    repo = Repo(ciserver, tmp_path / "repo")
    assert "restored: nothing" in repo.push("main-1")
    assert "restored: main-1" in repo.push("main-2")
    feature = repo.push("poisoned by feature", branch="feature/x")
    assert "restored: main-2" in feature, "a branch with no cache of its own gets the default branch's"
    assert "restored: poisoned by feature" in repo.push("feature again", branch="feature/x")
    main = repo.push("main-3")
    assert "restored: main-2" in main, "the feature branch saved under main's key, yet main is intact"
    assert "of refs/heads/main" in feature, "the log says whose cache it restored"


def test_an_archive_that_cannot_be_restored_is_reported_and_skipped(
    ciserver: CiServer, tmp_path: Path
) -> None:
    repo = Repo(ciserver, tmp_path / "repo")
    # A job can make such an archive: a pipe in a cache path is archived, and never unpacked.
    piped = PIPELINE.replace("cp CONTENT deps/state", "cp CONTENT deps/state && mkfifo deps/pipe")
    repo.push("piped", files={"pipelines.yml": piped})
    log = repo.push("after", files={"pipelines.yml": PIPELINE})
    assert "cache: the archive cannot be restored" in log and "the job runs without it" in log, log
    assert "restored: nothing" in log, "no half-restored files in the workspace"
    assert "restored: after" in repo.push("healed"), "the job saved a good cache again"


def test_links_in_a_cache_come_back_as_links_even_to_outside_the_workspace(
    ciserver: CiServer, tmp_path: Path
) -> None:
    """A virtualenv's `bin/python -> /usr/bin/python3`: the link is restored, never followed."""
    repo = Repo(ciserver, tmp_path / "repo")
    linking = f"""\
image: {BUSYBOX}
jobs:
  deps:
    script:
      - 'echo "restored: $(cat deps/state 2>/dev/null || echo nothing)"'
      - readlink deps/python || true
      - readlink deps/alias || true
      - mkdir -p deps && cp CONTENT deps/state
      - ln -sf /bin/busybox deps/python && ln -sf state deps/alias
    cache: {{key: "deps-{{{{ hashFiles('lock') }}}}", paths: [deps]}}
"""
    repo.push("linked", files={"pipelines.yml": linking})
    log = repo.push("again", files={"pipelines.yml": linking})
    assert "restored: linked" in log and "\n/bin/busybox\n" in log and "\nstate\n" in log, log
