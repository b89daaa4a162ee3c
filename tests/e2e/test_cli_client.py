"""The CLI client against the real server: builds, build, logs (-f), watch, cancel, retry, push, run as
a person runs them from a directory of their own, with a token and the server's address only."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from ciserver.ports import free_port
from tests.support.cli_client import run_client, run_in_terminal, start_client
from tests.support.engine import BUSYBOX
from tests.support.git import commit, make_repo
from tests.support.server import CiServer

# One database is enough here: the client speaks HTTP to the API, the same whatever the database.
ONE_DATABASE = True

GREEN = f"""\
image: {BUSYBOX}
stages: [test, build]
jobs:
  hello:
    stage: test
    script: [sleep 2, echo hello from the job]
  package:
    stage: build
    script: [echo packaged]
"""

FAILING = f"""\
image: {BUSYBOX}
stages: [test, build]
jobs:
  broken:
    stage: test
    script: [echo about to fail, exit 3]
  package:
    stage: build
    script: [echo never]
"""

SLOW_LOG = f"""\
image: {BUSYBOX}
jobs:
  counting:
    script: ['for i in 1 2 3 4 5 6; do echo "line $i"; sleep 1.5; done']
"""

LONG = f"""\
image: {BUSYBOX}
jobs:
  long:
    script: [sleep 60]
"""


@pytest.fixture
def home(tmp_path: Path) -> Iterator[Path]:
    """Where the client runs: no data dir, and none may appear."""
    where = tmp_path / "home"
    where.mkdir()
    yield where
    assert not (where / ".ciserver").exists(), "a client command created a data dir"


def registered(ciserver: CiServer, tmp_path: Path, pipeline: str, forge: str = "github") -> tuple[str, str]:
    name = f"cli/p{uuid.uuid4().hex[:10]}"
    sha = make_repo(tmp_path / "repo", {"pipelines.yml": pipeline})
    ciserver.add_project(name, tmp_path / "repo", forge=forge)
    return name, sha


def data_dir_of(ciserver: CiServer) -> dict[str, str]:
    """The settings that find the server's database and key: `push` reads the project's secret there."""
    return {k: v for k, v in ciserver.env.items() if k in ("CISERVER_DATA_DIR", "CISERVER_DATABASE_URL")}


def pushed(ciserver: CiServer, name: str, sha: str, **fields: str) -> int:
    response = ciserver.push_github(name, sha, **fields)
    assert response.status_code == 202, response.text
    return int(response.json()["build_id"])


def test_a_green_build_in_builds_build_and_watch_with_exit_status_0(
    ciserver: CiServer, tmp_path: Path, home: Path
) -> None:
    name, sha = registered(ciserver, tmp_path, GREEN)
    build_id = pushed(ciserver, name, sha)
    watch = start_client(ciserver, home, "watch", str(build_id))  # while the build is queued or starting
    out, err = watch.communicate(timeout=90)
    hello = {j["name"]: j for j in ciserver.build(build_id)["jobs"]}["hello"]
    assert watch.returncode == 0, err
    lines = out.splitlines()
    assert lines[0].startswith(f"build {build_id} {name} main {sha[:12]}: ")
    package = {j["name"]: j for j in ciserver.build(build_id)["jobs"]}["package"]
    # Told as it happened: the job running when the watch began, then its end, then the next job's.
    assert f"job {hello['id']} test/hello: running" in lines
    told = [line.split(" in ")[0] for line in lines]
    assert told.index(f"job {hello['id']} test/hello: success") > told.index(
        f"job {hello['id']} test/hello: running"
    )
    assert f"job {package['id']} build/package: success" in told
    assert lines[-1].startswith(f"build {build_id}: success in ")

    table = run_client(ciserver, home, "builds", "--project", name)
    assert table.returncode == 0, table.stderr
    row = next(line.split() for line in table.stdout.splitlines() if line.split()[:1] == [str(build_id)])
    assert row[1:5] == [name, "main", sha[:8], "success"]

    shown = run_client(ciserver, home, "build", str(build_id))
    assert shown.returncode == 0, shown.stderr
    jobs = {
        line.split()[1]: line.split()
        for line in shown.stdout.splitlines()
        if line.split()[:1] in (["test"], ["build"])
    }
    assert jobs["hello"][2:4] == [str(hello["id"]), "success"]
    assert jobs["package"][2:4] == [str(package["id"]), "success"]

    for command in (["builds", "--project", name], ["build", str(build_id)]):
        as_json = run_client(ciserver, home, *command, "--json")
        assert as_json.returncode == 0, as_json.stderr
        api = ciserver.http.get("/api/v1/builds", params={"project": name, "limit": 20}).json()
        assert json.loads(as_json.stdout) == (api if command[0] == "builds" else ciserver.build(build_id))

    log = run_client(ciserver, home, "logs", str(hello["id"]))
    assert log.returncode == 0 and "hello from the job" in log.stdout


def test_a_failing_build_says_which_job_failed_and_why_the_next_was_skipped_and_exits_1(
    ciserver: CiServer, tmp_path: Path, home: Path
) -> None:
    name, sha = registered(ciserver, tmp_path, FAILING)
    build_id = pushed(ciserver, name, sha)

    watch = run_client(ciserver, home, "watch", str(build_id))
    assert watch.returncode == 1, watch.stderr
    build = ciserver.build(build_id)
    broken, package = build["jobs"]
    failed = next(
        line
        for line in watch.stdout.splitlines()
        if line.startswith(f"job {broken['id']} test/broken: failed in ")
    )
    assert failed.endswith("exit code 3"), failed
    assert watch.stdout.splitlines()[-1].startswith(f"build {build_id}: failed")

    shown = run_client(ciserver, home, "build", str(build_id))
    assert shown.returncode == 0, shown.stderr
    line_of = {
        line.split()[1]: line
        for line in shown.stdout.splitlines()
        if line.split()[:1] in (["test"], ["build"])
    }
    assert "failed" in line_of["broken"] and "exit code 3" in line_of["broken"]
    assert "skipped" in line_of["package"] and package["error"][:30] in line_of["package"]

    log = run_client(ciserver, home, "logs", "-f", str(broken["id"]))
    assert log.returncode == 1
    assert "about to fail" in log.stdout
    assert f"job {broken['id']} ended failed" in log.stderr

    as_json = run_client(ciserver, home, "watch", str(build_id), "--json")
    assert as_json.returncode == 1
    assert json.loads(as_json.stdout.splitlines()[0])["status"] == "failed"


def test_logs_follow_prints_a_running_job_s_lines_as_they_come_until_it_ends(
    ciserver: CiServer, tmp_path: Path, home: Path
) -> None:
    name, sha = registered(ciserver, tmp_path, SLOW_LOG)
    build_id = pushed(ciserver, name, sha)
    job = ciserver.wait_job_status(build_id, "counting", "running")

    follow = start_client(ciserver, home, "logs", "-f", str(job["id"]))
    assert follow.stdout is not None
    seen = [follow.stdout.readline()]  # the script's line as the job shell echoes it, then its output
    while not seen[-1].startswith("line ") and seen[-1]:
        seen.append(follow.stdout.readline())
    # The first line reached the terminal while the job still ran: followed, not printed at the end.
    assert seen[-1] == "line 1\n", seen
    assert ciserver.http.get(f"/api/v1/jobs/{job['id']}").json()["status"] == "running"
    rest = follow.stdout.read()  # not communicate(): it would skip what readline() buffered
    assert follow.wait(60) == 0, follow.stderr.read() if follow.stderr else ""
    printed = "".join(seen) + rest
    assert [line for line in printed.splitlines() if line.startswith("line ")] == [
        f"line {n}" for n in range(1, 7)
    ]
    assert printed == ciserver.log(job["id"])


def test_cancel_and_retry_and_a_viewer_refused_with_the_role_named(
    ciserver: CiServer, tmp_path: Path, home: Path
) -> None:
    name, sha = registered(ciserver, tmp_path, LONG)
    build_id = pushed(ciserver, name, sha)
    ciserver.wait_job_status(build_id, "long", "running")

    viewer = run_client(ciserver, home, "cancel", str(build_id), token=ciserver.token_for("viewer"))
    assert viewer.returncode == 2
    assert (
        viewer.stderr.strip()
        == "error: not allowed (403): this needs the developer role; the token has viewer"
    )

    canceled = run_client(ciserver, home, "cancel", str(build_id))
    assert (canceled.returncode, canceled.stdout.strip()) == (0, f"build {build_id} canceled")
    again = run_client(ciserver, home, "cancel", str(build_id))
    assert again.returncode == 2 and f"build {build_id} already ended canceled (409)" in again.stderr

    retried = run_client(ciserver, home, "retry", str(build_id))
    assert retried.returncode == 0, retried.stderr
    new_id = int(retried.stdout.split()[1])
    assert new_id != build_id and f"ciserver watch {new_id}" in retried.stdout
    assert ciserver.build(new_id)["sha"] == sha
    assert run_client(ciserver, home, "cancel", str(new_id)).returncode == 0


def test_a_wrong_url_token_or_id_is_one_line_of_error_never_a_traceback(
    ciserver: CiServer, home: Path
) -> None:
    down = f"http://127.0.0.1:{free_port()}"
    cases = {
        ("builds", "--url", down): f"error: cannot reach the server at {down}: ",
        ("watch", "1", "--url", "localhost:8080"): "error: --url / CISERVER_URL: ",
        ("builds", "--token", "not-a-token"): "error: the server refused the token (401: ",
        ("build", "999999"): "error: build 999999 does not exist (404)",
        ("logs", "-f", "999999"): "error: job 999999 does not exist (404)",
    }
    for args, start in cases.items():
        result = run_client(ciserver, home, *args)
        assert result.returncode == 2, (args, result.stdout)
        assert result.stderr.startswith(start) and result.stderr.count("\n") == 1, (args, result.stderr)
        assert "Traceback" not in result.stderr
    missing = run_client(ciserver, home, "builds", token=None)
    assert missing.returncode == 2 and "no API token: set CISERVER_TOKEN" in missing.stderr


def test_what_a_pusher_wrote_prints_as_text_never_as_terminal_escapes(
    ciserver: CiServer, tmp_path: Path, home: Path
) -> None:
    name, sha = registered(ciserver, tmp_path, GREEN)
    evil = "fix \x1b]52;c;cm0gLXJmIH4=\x07 \x1b[2J[bold red]loud[/] \u202eesrever"
    build_id = pushed(ciserver, name, sha, message=evil)
    ciserver.wait_build(build_id)
    shown = run_client(ciserver, home, "build", str(build_id))
    assert shown.returncode == 0, shown.stderr
    assert "\x1b" not in shown.stdout and "\x07" not in shown.stdout and "\u202e" not in shown.stdout
    assert "fix [bold red]loud[/] ?esrever" in shown.stdout
    assert json.loads(run_client(ciserver, home, "build", str(build_id), "--json").stdout)["message"] == evil


def test_push_sends_a_signed_push_of_the_local_repository_and_watch_follows_it(
    ciserver: CiServer, tmp_path: Path, home: Path
) -> None:
    name, sha = registered(ciserver, tmp_path, GREEN)
    data_dir = data_dir_of(ciserver)

    sent = run_client(ciserver, home, "push", name, "--ref", "main", token=None, **data_dir)
    assert sent.returncode == 0, sent.stderr
    first, follow = sent.stdout.splitlines()
    build_id = int(first.split()[1])
    assert first == f"build {build_id} queued: {name} refs/heads/main {sha[:12]}"
    assert follow == f"follow it with: ciserver watch {build_id}"
    build = ciserver.wait_build(build_id)
    assert (build["status"], build["sha"], build["branch"], build["message"]) == (
        "success",
        sha,
        "main",
        "first commit",
    )

    again = run_client(ciserver, home, "push", name, "--ref", "main", token=None, **data_dir)
    assert again.returncode == 0 and again.stdout.startswith(f"build {build_id} already recorded")

    newer = commit(tmp_path / "repo", {"NOTE": "two"}, "second commit")
    watched = run_client(ciserver, home, "push", name, "--ref", "main", "--watch", **data_dir)
    assert watched.returncode == 0, watched.stderr
    assert f"{name} refs/heads/main {newer[:12]}" in watched.stdout.splitlines()[0]
    assert watched.stdout.splitlines()[-1].split(" in ")[0].endswith(": success")


def test_push_signs_for_a_gitlab_project_too(ciserver: CiServer, tmp_path: Path, home: Path) -> None:
    name, sha = registered(ciserver, tmp_path, GREEN, forge="gitlab")
    data_dir = data_dir_of(ciserver)
    sent = run_client(ciserver, home, "push", name, "--ref", "main", "--watch", **data_dir)
    assert sent.returncode == 0, sent.stderr
    build_id = int(sent.stdout.split()[1])
    assert ciserver.build(build_id)["sha"] == sha


def test_push_refuses_without_the_server_s_data_dir_and_creates_none(
    ciserver: CiServer, tmp_path: Path, home: Path
) -> None:
    name, _ = registered(ciserver, tmp_path, GREEN)
    refused = run_client(ciserver, home, "push", name, "--ref", "main")
    assert refused.returncode == 2
    assert refused.stderr.startswith(f"error: no ciserver database at {home / '.ciserver' / 'ciserver.db'}")
    unknown = run_client(ciserver, home, "push", "nobody/here", "--ref", "main", **data_dir_of(ciserver))
    assert unknown.returncode == 2 and "project 'nobody/here' is not registered" in unknown.stderr


HOSTILE_LOG = f"""\
image: {BUSYBOX}
jobs:
  shouty:
    script:
      - sleep 2
      - printf '\\033]0;owned\\007\\033]52;c;cm0gLXJmIH4=\\007\\033[31mred words\\033[0m\\n'
"""


def test_on_a_terminal_colours_and_a_progress_bar_but_never_a_pusher_s_escapes(
    ciserver: CiServer, tmp_path: Path, home: Path
) -> None:
    name, sha = registered(ciserver, tmp_path, HOSTILE_LOG)
    build_id = pushed(ciserver, name, sha)
    status, out = run_in_terminal(ciserver, home, "watch", str(build_id))
    assert status == 0, out
    assert f"build {build_id}: " in out and "\x1b[32msuccess" in out  # green on a terminal
    assert "━" in out  # the progress bar, drawn while the build ran

    job = ciserver.build(build_id)["jobs"][0]
    status, out = run_in_terminal(ciserver, home, "logs", str(job["id"]))
    assert status == 0
    assert "\x1b[31mred words\x1b[0m" in out  # the log's own colours
    assert "\x1b]" not in out and "\x07" not in out  # no title change, no clipboard write
    assert "\x1b]52" in ciserver.log(job["id"])  # they were in the log: removed on the way to the terminal

    status, out = run_in_terminal(ciserver, home, "logs", str(job["id"]), NO_COLOR="1")
    assert status == 0 and "red words" in out and "\x1b[31m" not in out
    status, out = run_in_terminal(ciserver, home, "build", str(build_id), NO_COLOR="1")
    assert status == 0 and "success" in out and "\x1b[32m" not in out
