"""A CLI command run from another directory than the server's: it says which data dir it uses, and
refuses to make a second, empty one there (where a token it printed would be unknown to the server)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest


def ciserver(cwd: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """`ciserver ARGS` typed in `cwd`, with no CISERVER_* setting but those given."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("CISERVER_")}
    return subprocess.run(
        [sys.executable, "-m", "ciserver", *args],
        cwd=cwd,
        env={**environment, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.fixture
def server_dir(tmp_path: Path) -> Path:
    """Where the operator ran `ciserver up`: its ./.ciserver holds the database."""
    root = tmp_path / "server"
    root.mkdir()
    made = ciserver(root, "--init", "token", "create", "--role", "admin")
    assert made.returncode == 0, made.stderr
    return root


@pytest.mark.parametrize(
    "command",
    [
        ["token", "create", "--role", "admin"],
        ["token", "list"],
        ["project", "list"],
        ["secret", "list", "octo/app"],
        ["environment", "list", "octo/app"],
        ["db", "current"],
        ["audit"],
    ],
)
def test_a_command_run_elsewhere_refuses_to_make_a_new_data_dir_naming_the_setting_and_path(
    tmp_path: Path, command: list[str]
) -> None:
    elsewhere = tmp_path / "home"
    elsewhere.mkdir()
    result = ciserver(elsewhere, *command)
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stdout == ""
    assert f"data dir {elsewhere / '.ciserver'} does not exist" in result.stderr
    assert "CISERVER_DATA_DIR" in result.stderr and "--init" in result.stderr
    assert "Traceback" not in result.stderr
    assert list(elsewhere.iterdir()) == [], "nothing was created"


def test_a_token_made_from_another_directory_goes_to_the_servers_data_dir_named_on_stderr(
    server_dir: Path, tmp_path: Path
) -> None:
    data = server_dir / ".ciserver"
    elsewhere = tmp_path / "home"
    elsewhere.mkdir()
    made = ciserver(
        elsewhere, "token", "create", "--role", "viewer", "--name", "from home", CISERVER_DATA_DIR=str(data)
    )
    assert made.returncode == 0, made.stderr
    assert made.stderr.splitlines()[0] == f"ciserver: data dir {data} (CISERVER_DATA_DIR)"
    listed = ciserver(server_dir, "token", "list")
    assert listed.stderr.splitlines()[0] == f"ciserver: data dir {data} (the default, ./.ciserver)"
    rows = [line.split("\t") for line in listed.stdout.splitlines()]
    assert [row[1] for row in rows] == ["admin", "viewer"] and rows[1][2] == "from home"
    assert list(elsewhere.iterdir()) == []


def test_init_makes_the_data_dir_when_asked(tmp_path: Path) -> None:
    made = ciserver(tmp_path, "--init", "project", "list")
    assert made.returncode == 0, made.stderr
    assert (tmp_path / ".ciserver" / "ciserver.db").is_file()


def test_a_database_url_is_named_without_its_password(tmp_path: Path, server_dir: Path) -> None:
    url = f"sqlite:///{server_dir / '.ciserver' / 'ciserver.db'}"
    listed = ciserver(tmp_path, "token", "list", CISERVER_DATABASE_URL=url)
    assert listed.returncode == 0, listed.stderr
    assert listed.stderr.startswith(f"ciserver: database {url} (CISERVER_DATABASE_URL), data dir ")
    refused = ciserver(
        tmp_path, "token", "list", CISERVER_DATABASE_URL="postgresql+psycopg://ci:hunter2@127.0.0.1:1/ci"
    )
    assert "ci:***@127.0.0.1:1/ci" in refused.stderr and "hunter2" not in refused.stderr
