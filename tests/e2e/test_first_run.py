"""The README's first run, typed as it is written: its shell blocks are read from README.md and run
with bash in a fresh directory (a stand-in clone whose .venv is this one), against `ciserver up`
started as its quick start says. A README that stops working as written fails here."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from ciserver.ports import free_port

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()


def section(title: str) -> str:
    start = README.index(f"\n{title}\n")
    following = re.search(r"\n#{2,3} ", README[start + len(title) + 2 :])
    return README[start : start + len(title) + 2 + (following.start() if following else len(README))]


def shell_blocks(text: str) -> list[str]:
    return re.findall(r"```sh\n(.*?)```", text, re.DOTALL)


def on_port(block: str, port: int) -> str:
    return block.replace("127.0.0.1:8080", f"127.0.0.1:{port}")


@pytest.fixture
def clone(tmp_path: Path) -> Path:
    """A directory shaped as the README's reader has it: a clone with scripts/install's .venv."""
    root = tmp_path / "clone"
    root.mkdir()
    (root / ".venv").symlink_to(ROOT / ".venv")
    (tmp_path / "home").mkdir()
    return root


@pytest.fixture
def environment(tmp_path: Path) -> dict[str, str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("CISERVER_")}
    return {**clean, "HOME": str(tmp_path / "home")}


@pytest.fixture
def up(clone: Path, environment: dict[str, str], busybox_image: str) -> Iterator[int]:
    """The quick start's `ciserver up` line, on a free port."""
    [start] = [line for line in shell_blocks(section("## Start it"))[0].splitlines() if " up " in line]
    port = free_port()
    command = start.split("#")[0].strip() + f" --port {port}"
    log = open(clone.parent / "up.log", "wb")  # noqa: SIM115 - closed below
    process = subprocess.Popen(
        ["bash", "-c", f"exec env {command}"],
        cwd=clone,
        env=environment,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz").status_code == 200:
                break
        except httpx.TransportError:
            time.sleep(0.2)
    else:
        raise AssertionError("ciserver up did not answer: " + (clone.parent / "up.log").read_text())
    try:
        yield port
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(60)
        log.close()


def run(block: str, clone: Path, environment: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", "-euo", "pipefail", "-c", block],
        cwd=clone,
        env=environment,
        capture_output=True,
        text=True,
        timeout=180,
    )


def test_the_readme_first_run_goes_green_as_written(
    clone: Path, environment: dict[str, str], up: int
) -> None:
    first, by_hand, *_ = shell_blocks(section("### First run: a repository of your own, a push, green"))
    env = {**environment, "CISERVER_URL": f"http://127.0.0.1:{up}"}
    # One shell, as the reader's: the second block uses what the first made ($REPO, the secret).
    result = run(f"{first}\n{on_port(by_hand, up)}\n", clone, env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "build 1: success" in result.stdout
    assert re.search(r'\{"build_id":\s*2\b', result.stdout), result.stdout
    assert f"ciserver: data dir {clone / '.ciserver'} (the default, ./.ciserver)" in result.stderr

    # The reader's token stayed in their shell: read the builds with a new one.
    token = run("source .venv/bin/activate && ciserver token create --role viewer | tail -n 1", clone, env)
    viewer = {"Authorization": f"Bearer {token.stdout.strip()}"}
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        second = httpx.get(f"http://127.0.0.1:{up}/api/v1/builds/2", headers=viewer).json()
        if second["status"] not in ("queued", "running"):
            break
        time.sleep(0.2)
    assert second["status"] == "success", second
    [job] = second["jobs"]
    assert job["image"] == "ciserver-test/busybox"
    log = httpx.get(f"http://127.0.0.1:{up}/api/v1/jobs/{job['id']}/log", headers=viewer).text
    assert "hello from " in log and " on main" in log

    data = clone / ".ciserver"
    assert {"api.log", "worker-1.log", "redis.log"} <= {p.name for p in (data / "process-logs").iterdir()}
    assert not (data / "log").exists()
    assert list((Path(environment["HOME"]) / "hello").glob("pipelines.yml"))
