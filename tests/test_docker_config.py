"""The pure translation of a job into docker-py arguments (Docker is not needed here)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from ciserver.config import Settings
from ciserver.store.models import Build
from workers.executors.base import ExecutorError, JobSpec, Limits, ServiceSpec, shell_script
from workers.executors.docker import JOB_CAPABILITIES, container_config, installation_mark, service_config
from workers.jobspec import build_cache

LIMITS = Limits(memory=64 * 1024**2, cpus=1.0, pids=128)


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


MARK = installation_mark(spec())


def test_two_installations_on_one_engine_never_ask_for_the_same_names() -> None:
    """Job ids repeat across databases: the same job id of two data dirs gets two container, network and
    service names, and one data dir always the same ones (a restarted worker finds its leftovers)."""
    service = ServiceSpec("postgres:16", "db")
    one, other = ({"ciserver.job": "42", "ciserver.data_dir": f"/srv/{name}"} for name in ("one", "other"))
    names = {
        data_dir: (
            container_config(spec(labels=labels, services=(service,)))["name"],
            container_config(spec(labels=labels, services=(service,)))["network"],
            service_config(spec(labels=labels), service)["name"],
            container_config(spec(labels=labels, container="ciserver-deploy-7-1"))["name"],
        )
        for data_dir, labels in (("one", one), ("other", other))
    }
    assert not set(names["one"]) & set(names["other"])
    again = container_config(spec(labels=dict(one), services=(service,)))
    assert (again["name"], again["network"]) == names["one"][:2]
    assert all(name.startswith(("ciserver-job-42-", "ciserver-deploy-7-1-")) for name in names["one"])


def test_the_workspace_is_mounted_at_workspace_and_is_the_working_directory() -> None:
    config = container_config(spec())
    assert config["volumes"] == {"/data/workspaces/7/42": {"bind": "/workspace", "mode": "rw"}}
    assert config["working_dir"] == "/workspace"


def test_the_script_runs_under_sh_e_and_the_job_is_labelled_and_named() -> None:
    config = container_config(spec())
    assert config["entrypoint"][:3] == ["/bin/sh", "-e", "-c"]
    assert "python3 -m pytest -q" in config["entrypoint"][3]
    assert config["labels"] == {"ciserver.job": "42"}
    assert config["name"] == f"ciserver-job-42-{MARK}"
    assert config["environment"] == {"CI": "true"}
    assert config["image"] == "ciserver-test/python:3.11"


def test_each_line_is_echoed_before_it_runs_quotes_survive_and_a_failure_stops_the_script() -> None:
    lines = ["echo \"a  b\" 'c$d'", "false", "echo never"]
    result = subprocess.run(["sh", "-e", "-c", shell_script(lines)], capture_output=True, text=True)
    assert result.stdout.splitlines() == ["$ echo \"a  b\" 'c$d'", "a  b c$d", "$ false"]
    assert result.returncode == 1


def test_every_capability_is_dropped_but_those_package_managers_need_and_no_privilege_can_be_gained() -> None:
    config = container_config(spec())
    assert config["cap_drop"] == ["ALL"]
    assert sorted(config["cap_add"]) == ["CHOWN", "DAC_OVERRIDE", "FOWNER", "SETGID", "SETUID"]
    assert config["security_opt"] == ["no-new-privileges:true"]
    assert config["privileged"] is False
    assert config["init"] is True


def test_limits_map_to_memory_without_swap_nano_cpus_and_pids() -> None:
    config = container_config(spec(limits=Limits(memory=32 * 1024**2, cpus=1.5, pids=64)))
    assert config["mem_limit"] == 32 * 1024**2
    assert config["memswap_limit"] == 32 * 1024**2
    assert config["nano_cpus"] == 1_500_000_000
    assert config["pids_limit"] == 64


def test_without_limits_the_engine_defaults_hold() -> None:
    config = container_config(spec())
    assert not {"mem_limit", "memswap_limit", "nano_cpus", "pids_limit"} & config.keys()


def test_user_is_passed_only_when_named() -> None:
    assert container_config(spec(user="1000:1000"))["user"] == "1000:1000"
    assert "user" not in container_config(spec())


def test_network_none_gives_network_mode_none_and_default_leaves_the_engine_default() -> None:
    assert container_config(spec(network="none"))["network_mode"] == "none"
    default = container_config(spec())
    assert "network_mode" not in default and "network" not in default


def test_nothing_but_the_workspace_is_mounted_and_no_device_or_host_namespace_is_shared() -> None:
    config = container_config(spec(services=(ServiceSpec("db:1", "db"),), limits=LIMITS, user="1000"))
    assert list(config["volumes"]) == ["/data/workspaces/7/42"]
    forbidden = {"mounts", "devices", "volumes_from", "pid_mode", "ipc_mode", "userns_mode", "cgroupns"}
    assert not forbidden & config.keys()
    assert not any("docker.sock" in str(value) for value in config.values())
    service = service_config(spec(), ServiceSpec("db:1", "db"))
    assert not {"volumes", "mounts", "devices", "volumes_from"} & service.keys()
    assert service["privileged"] is False


def test_a_job_with_services_joins_the_jobs_own_network() -> None:
    config = container_config(spec(services=(ServiceSpec("postgres:16", "db"),)))
    assert config["network"] == f"ciserver-job-42-{MARK}"
    assert "network_mode" not in config


def test_a_service_is_named_labelled_aliased_and_hardened_like_a_job_plus_low_ports() -> None:
    service = ServiceSpec("postgres:16", "db", env={"POSTGRES_PASSWORD": "x"}, command=("postgres", "-F"))
    config = service_config(spec(limits=LIMITS), service)
    assert config["name"] == f"ciserver-job-42-{MARK}-svc-db"
    assert config["labels"] == {"ciserver.job": "42", "ciserver.service": "db"}
    assert config["network"] == f"ciserver-job-42-{MARK}"
    assert config["networking_config"] == {f"ciserver-job-42-{MARK}": {"Aliases": ["db"]}}
    assert config["environment"] == {"POSTGRES_PASSWORD": "x"}
    assert config["command"] == ["postgres", "-F"]
    assert sorted(config["cap_add"]) == sorted([*JOB_CAPABILITIES, "NET_BIND_SERVICE"])
    assert config["cap_drop"] == ["ALL"]
    assert config["security_opt"] == ["no-new-privileges:true"]
    assert config["pids_limit"] == LIMITS.pids and config["mem_limit"] == LIMITS.memory


def test_a_service_without_a_command_keeps_its_images_default() -> None:
    assert "command" not in service_config(spec(), ServiceSpec("redis:7", "cache"))


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"network": "none", "services": (ServiceSpec("db:1", "db"),)}, "network none"),
        ({"services": (ServiceSpec("db:1", "db"), ServiceSpec("db:2", "db"))}, "must differ"),
        ({"services": (ServiceSpec("db:1", "../x"),)}, "not a valid host name"),
    ],
)
def test_services_that_cannot_work_are_refused(changes: dict[str, object], message: str) -> None:
    with pytest.raises(ExecutorError, match=message):
        container_config(spec(**changes))


def test_an_image_build_reads_its_refs_step_cache_then_the_default_branchs_and_writes_only_its_own(
    tmp_path: Path,
) -> None:
    settings = Settings(data_dir=tmp_path)
    feature = Build(project_id=7, ref="refs/heads/feature/x", default_branch="main")
    main = Build(project_id=7, ref="refs/heads/main", default_branch="main")
    on_feature, on_main = build_cache(settings, feature), build_cache(settings, main)
    assert on_main.read == (on_main.write,)
    assert on_feature.read == (on_feature.write, on_main.write) and on_feature.write != on_main.write
    assert (
        on_feature.write is not None and on_feature.write.parent == tmp_path.resolve() / "build-cache" / "7"
    )
    tag = Build(project_id=7, ref="refs/tags/v1", default_branch=None)  # the forge said none: main
    assert build_cache(settings, tag).read == (build_cache(settings, tag).write, on_main.write)
