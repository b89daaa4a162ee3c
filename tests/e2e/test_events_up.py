"""`ciserver up` as a newcomer runs it: after the start, one line per build created, started and ended,
and per job end, each with its status and where to read more."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

from ciserver.ports import free_port
from tests.e2e.test_push_to_green import TWO_STAGES
from tests.support.git import make_repo
from tests.support.payloads import WEBHOOK_SECRET, github_headers, github_push_body


def test_up_prints_a_line_per_build_change_and_job_end_with_its_address(tmp_path: Path) -> None:
    data, port = tmp_path / "data", free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CISERVER_")}
    env.update(CISERVER_DATA_DIR=str(data), CISERVER_ALLOW_LOCAL_REPOS="true", CISERVER_ROUTER_RELOAD="false")
    up = subprocess.Popen(
        [sys.executable, "-m", "ciserver", "up", "--port", str(port), "--workers", "1"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(up.stdout.readline, "")), daemon=True)  # type: ignore[union-attr]
    reader.start()
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{base}/healthz").status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        sha = make_repo(tmp_path / "repo", {"pipelines.yml": TWO_STAGES, "README": "hello\n"})
        add = [
            sys.executable,
            "-m",
            "ciserver",
            "project",
            "add",
            "octo/up",
            "--repo",
            str(tmp_path / "repo"),
        ]
        subprocess.run(
            [*add, "--forge", "github", "--secret", WEBHOOK_SECRET], env=env, check=True, timeout=60
        )
        body = github_push_body("octo/up", sha)
        answer = httpx.post(
            f"{base}/webhooks/github", content=body, headers=github_headers(body, WEBHOOK_SECRET)
        )
        assert answer.status_code == 202, answer.text
        build_id = answer.json()["build_id"]
        deadline = time.monotonic() + 90
        while not any(f"build {build_id} octo/up main {sha[:7]}: success" in line for line in lines):
            assert time.monotonic() < deadline, "".join(lines)
            time.sleep(0.1)
    finally:
        up.send_signal(signal.SIGTERM)
        up.wait(60)
    reader.join(5)
    progress = [line.rstrip("\n") for line in lines if re.match(r"(build|job|deployment) \d+ ", line)]
    build_url = f"{base}/api/v1/builds/{build_id}"
    assert progress[:2] == [
        f"build {build_id} octo/up main {sha[:7]}: queued {build_url}",
        f"build {build_id} octo/up main {sha[:7]}: running {build_url}",
    ]
    job_line = r"job (\d+) octo/up build {} {}: success \(exit 0, \d+\.\ds\) {}/api/v1/jobs/\1/log"
    assert re.fullmatch(job_line.format(build_id, "hello", re.escape(base)), progress[2]), progress
    assert re.fullmatch(job_line.format(build_id, "package", re.escape(base)), progress[3]), progress
    assert re.fullmatch(
        rf"build {build_id} octo/up main {sha[:7]}: success \(2 jobs, \d+\.\ds\) {re.escape(build_url)}",
        progress[4],
    ), progress
    assert len(progress) == 5, progress
    assert up.returncode == 0
