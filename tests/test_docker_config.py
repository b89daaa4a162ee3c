"""The pure translation of a job into docker-py arguments (Docker is not needed here)."""

from __future__ import annotations

import subprocess
from pathlib import Path

from workers.executors.base import JobSpec, shell_script
from workers.executors.docker import container_config


def spec(**changes: object) -> JobSpec:
    fields: dict[str, object] = {
        "job_id": 42,
        "name": "unit",
        "image": "ciserver-test/python:3.11",
        "script": ("python3 -m pytest -q",),
        "env": {"CI": "true"},
        "workspace": Path("/data/workspaces/7/42"),
        "labels": {"ciserver.job": "42"},
    }
    fields.update(changes)
    return JobSpec(**fields)  # type: ignore[arg-type]


def test_the_workspace_is_mounted_at_workspace_and_is_the_working_directory() -> None:
    config = container_config(spec())
    assert config["volumes"] == {"/data/workspaces/7/42": {"bind": "/workspace", "mode": "rw"}}
    assert config["working_dir"] == "/workspace"


def test_the_script_runs_under_sh_e_and_the_job_is_labelled_and_named() -> None:
    config = container_config(spec())
    assert config["entrypoint"][:3] == ["/bin/sh", "-e", "-c"]
    assert "python3 -m pytest -q" in config["entrypoint"][3]
    assert config["labels"] == {"ciserver.job": "42"}
    assert config["name"] == "ciserver-job-42"
    assert config["environment"] == {"CI": "true"}
    assert config["image"] == "ciserver-test/python:3.11"


def test_each_line_is_echoed_before_it_runs_quotes_survive_and_a_failure_stops_the_script() -> None:
    lines = ["echo \"a  b\" 'c$d'", "false", "echo never"]
    result = subprocess.run(["sh", "-e", "-c", shell_script(lines)], capture_output=True, text=True)
    assert result.stdout.splitlines() == ["$ echo \"a  b\" 'c$d'", "a  b c$d", "$ false"]
    assert result.returncode == 1
