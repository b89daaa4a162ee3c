"""The Docker executor against the real engine: limits, dropped capabilities, services, image builds.

Every test labels what it starts with its own id and checks that nothing carrying it is left.
"""

from __future__ import annotations

import re
import threading
import time
import uuid
from pathlib import Path

import docker
import pytest

from tests.support.engine import PYTHON
from tests.support.executor import assert_nothing_left, build_spec, job, run, write_context
from workers.executors.base import (
    ExecutorError,
    JobExit,
    JobSpec,
    Limits,
    ServiceSpec,
)
from workers.executors.docker import DockerExecutor, container_name, job_prefix, network_name

pytestmark = [pytest.mark.timeout(120), pytest.mark.usefixtures("test_images")]

MiB = 1024**2


def in_thread(
    executor: DockerExecutor, spec: JobSpec, stop: threading.Event | None = None, marker: bytes = b"\0"
) -> tuple[threading.Thread, dict[str, object], threading.Event]:
    """The job run in its own thread; the event is set once its output holds `marker`."""
    result: dict[str, object] = {}
    marked = threading.Event()

    def seen(output: bytes) -> None:
        if marker in output:
            marked.set()

    def target() -> None:
        result["code"], result["output"], result["seconds"] = run(executor, spec, stop, seen)

    thread = threading.Thread(target=target)
    thread.start()
    return thread, result, marked


def pids_now(client: docker.DockerClient, spec: JobSpec) -> int:
    stats = client.containers.get(container_name(spec)).stats(stream=False, one_shot=True)
    return int(stats["pids_stats"]["current"])


def test_a_job_stopped_before_it_starts_is_killed_at_once(
    executor: DockerExecutor, client: docker.DockerClient, labels: dict[str, str], tmp_path: Path
) -> None:
    stop = threading.Event()
    stop.set()
    started = time.monotonic()
    exited = executor.run(job(tmp_path, labels, "sleep 30"), lambda _: None, stop)
    assert exited == JobExit(137, stopped=True) and time.monotonic() - started < 5
    assert_nothing_left(client, labels)


def test_a_fork_bomb_is_held_at_its_pids_limit_while_a_sibling_job_succeeds(
    executor: DockerExecutor, client: docker.DockerClient, labels: dict[str, str], tmp_path: Path
) -> None:
    limits = Limits(memory=256 * MiB, cpus=1.0, pids=64)
    # Every process forks forever and shrugs off the refusals: the bomb never dies out by itself.
    forever = "python3 -c \"exec('import os\\nwhile True:\\n try: os.fork()\\n except OSError: pass')\""
    bomb = job(tmp_path / "bomb", labels, "echo bomb-$((6 * 7))", forever, image=PYTHON, limits=limits)
    sibling = job(
        tmp_path / "sibling",
        labels,
        "for i in $(seq 30); do sh -c true; done",
        "echo sibling-ok",
        limits=limits,
    )
    stop = threading.Event()
    bomb_thread, bomb_result, started = in_thread(executor, bomb, stop, marker=b"bomb-42")
    try:
        assert started.wait(30)
        deadline = time.monotonic() + 10
        while pids_now(client, bomb) < limits.pids and time.monotonic() < deadline:
            time.sleep(0.05)
        assert pids_now(client, bomb) == limits.pids
        code, output, _ = run(executor, sibling)
        assert pids_now(client, bomb) == limits.pids  # the bomb raged all along
    finally:
        stop.set()  # as the job's timeout would
        bomb_thread.join(30)
    assert (code, output.splitlines()[-1]) == (0, "sibling-ok")
    assert bomb_result["code"] == 137
    assert_nothing_left(client, labels)


def test_a_memory_hog_is_killed_at_its_limit_while_a_sibling_job_succeeds(
    executor: DockerExecutor, client: docker.DockerClient, labels: dict[str, str], tmp_path: Path
) -> None:
    limits = Limits(memory=32 * MiB, cpus=1.0, pids=64)
    hog = job(tmp_path / "hog", labels, "head -c 300m /dev/zero | tail", "echo survived", limits=limits)
    sibling = job(
        tmp_path / "sibling",
        labels,
        "x=$(head -c 4m /dev/zero | tr '\\0' a)",
        "echo sibling-ok ${#x}",
        limits=limits,
    )
    hog_thread, hog_result, _ = in_thread(executor, hog)
    code, output, _ = run(executor, sibling)
    hog_thread.join(60)
    assert (code, output.splitlines()[-1]) == (0, f"sibling-ok {4 * MiB}")
    assert hog_result["code"] == 137
    assert "survived" not in str(hog_result["output"])
    assert "ran out of memory (its limit of 32 MiB)" in str(hog_result["output"])
    assert_nothing_left(client, labels)


def test_capabilities_are_dropped_but_chown_is_kept_and_no_new_privileges_holds(
    executor: DockerExecutor, client: docker.DockerClient, labels: dict[str, str], tmp_path: Path
) -> None:
    spec = job(
        tmp_path,
        labels,
        "touch owned && chown 65534:65534 owned && ls -n owned",
        "if mknod node c 1 3; then echo mknod-allowed; else echo mknod-refused; fi",
        "if ping -c1 -W1 127.0.0.1; then echo raw-allowed; else echo raw-refused; fi",
        "grep -E '^(CapEff|NoNewPrivs)' /proc/self/status",
    )
    code, output, _ = run(executor, spec)
    assert code == 0, output
    assert re.search(r" 65534 +65534 .* owned", output)
    assert "mknod-refused" in output and "raw-refused" in output
    assert "NoNewPrivs:\t1" in output
    # CHOWN 0, DAC_OVERRIDE 1, FOWNER 3, SETGID 6, SETUID 7: nothing else.
    assert "CapEff:\t00000000000000cb" in output
    assert_nothing_left(client, labels)


def test_the_job_runs_as_the_user_it_names(
    executor: DockerExecutor, client: docker.DockerClient, labels: dict[str, str], tmp_path: Path
) -> None:
    code, output, _ = run(executor, job(tmp_path, labels, "id -u; id -g", user="65534:65534"))
    assert code == 0 and output.splitlines()[-2:] == ["65534", "65534"]
    assert_nothing_left(client, labels)


def test_network_none_leaves_only_the_loopback_interface(
    executor: DockerExecutor, client: docker.DockerClient, labels: dict[str, str], tmp_path: Path
) -> None:
    code, output, _ = run(executor, job(tmp_path, labels, "ls /sys/class/net", network="none"))
    assert code == 0 and output.splitlines()[1:] == ["lo"]
    assert_nothing_left(client, labels)


def test_a_service_is_reachable_by_its_alias_and_gone_with_its_network_after_the_job(
    executor: DockerExecutor, client: docker.DockerClient, labels: dict[str, str], tmp_path: Path
) -> None:
    web = ServiceSpec(
        image="ciserver-test/busybox:latest",
        alias="web",
        env={"GREETING": "hello-from-the-service"},
        # Port 80: a service may listen below 1024.
        command=(
            "sh",
            "-c",
            "mkdir -p /www && echo $GREETING > /www/index.html && exec httpd -f -p 80 -h /www",
        ),
    )
    spec = job(
        tmp_path,
        labels,
        "for i in $(seq 50); do wget -qO- http://web/ && exit 0; sleep 0.1; done; exit 1",
        services=(web,),
        limits=Limits(memory=64 * MiB, cpus=1.0, pids=64),
    )
    code, output, seconds = run(executor, spec)
    assert code == 0, output
    assert "hello-from-the-service" in output
    assert seconds < 10
    assert_nothing_left(client, labels)
    assert client.networks.list(names=[network_name(spec)]) == []


def test_a_missing_service_image_is_an_executor_error_naming_it_and_leaves_nothing(
    executor: DockerExecutor, client: docker.DockerClient, labels: dict[str, str], tmp_path: Path
) -> None:
    missing = f"ciserver-test/no-such-image:{uuid.uuid4().hex[:8]}"
    spec = job(tmp_path, labels, "true", services=(ServiceSpec(image=missing, alias="db"),))
    with pytest.raises(ExecutorError, match=re.escape(missing)):
        run(executor, spec)
    assert_nothing_left(client, labels)


def leave_behind(client: docker.DockerClient, spec: JobSpec, alias: str) -> None:
    """What a worker killed mid-job leaves: the job's network, a running service on it, the job container."""
    name = job_prefix(spec)
    client.networks.create(name, driver="bridge", labels=dict(spec.labels))
    for left, extra in ((f"{name}-svc-{alias}", {"ciserver.service": alias}), (name, {})):
        client.containers.run(
            "ciserver-test/busybox:latest",
            ["sleep", "60"],
            name=left,
            labels={**spec.labels, **extra},
            network=name,
            detach=True,
        )


def test_leftovers_of_a_lost_job_are_removed_networks_after_containers_and_reported_once(
    executor: DockerExecutor, client: docker.DockerClient, labels: dict[str, str], tmp_path: Path
) -> None:
    spec = job(tmp_path, labels, "true")
    leave_behind(client, spec, "db")
    assert executor.remove_leftovers(labels, keep=lambda _: True) == []
    assert (
        len(client.containers.list(all=True, filters={"label": f"ciserver.test={labels['ciserver.test']}"}))
        == 2
    )
    assert executor.remove_leftovers(labels, keep=lambda _: False) == [dict(spec.labels)]
    assert_nothing_left(client, labels)


def test_a_retried_job_replaces_the_network_and_service_its_lost_attempt_left(
    executor: DockerExecutor, client: docker.DockerClient, labels: dict[str, str], tmp_path: Path
) -> None:
    web = ServiceSpec(
        image="ciserver-test/busybox:latest",
        alias="web",
        command=(
            "sh",
            "-c",
            "mkdir -p /www && echo fresh > /www/index.html && exec httpd -f -p 8080 -h /www",
        ),
    )
    spec = job(
        tmp_path,
        labels,
        "for i in $(seq 50); do wget -qO- http://web:8080/ && exit 0; sleep 0.1; done; exit 1",
        services=(web,),
    )
    leave_behind(client, spec, "web")
    code, output, _ = run(executor, spec)
    assert code == 0 and "fresh" in output, output
    assert_nothing_left(client, labels)


def test_a_same_named_container_of_another_installation_is_refused_not_removed(
    executor: DockerExecutor, client: docker.DockerClient, labels: dict[str, str], tmp_path: Path
) -> None:
    spec = job(tmp_path, {**labels, "ciserver.data_dir": "/srv/mine"}, "true")
    theirs = client.containers.create(
        "ciserver-test/busybox:latest",
        ["true"],
        name=container_name(spec),
        labels={**labels, "ciserver.data_dir": "/srv/theirs"},
    )
    with pytest.raises(ExecutorError, match="another ciserver"):
        run(executor, spec)
    theirs.reload()  # still there
    theirs.remove(force=True)
    assert_nothing_left(client, labels)


def test_the_job_starts_once_its_services_answer_on_the_ports_their_images_expose(
    executor: DockerExecutor,
    client: docker.DockerClient,
    labels: dict[str, str],
    image_tags: list[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    slow = f"ciserver-test-build/slow-web:{uuid.uuid4().hex[:12]}"
    image_tags.append(slow)
    dockerfile = (
        "FROM ciserver-test/busybox:latest\nEXPOSE 8080 9\n"
        'CMD ["sh", "-c", "mkdir -p /www && echo ready > /www/index.html && sleep 2 && '
        'exec httpd -f -p 8080 -h /www"]\n'
    )
    executor.build_image(
        build_spec(write_context(tmp_path / "ctx", dockerfile), labels, slow),
        lambda _: None,
        threading.Event(),
    )
    monkeypatch.setattr("workers.executors.docker.SERVICE_READY_TIMEOUT", 5.0)
    spec = job(
        tmp_path / "ws",
        labels,
        "wget -qO- http://web:8080/",
        services=(ServiceSpec(image=slow, alias="web"),),
    )
    code, output, _ = run(executor, spec)
    assert code == 0, output
    assert "ready" in output  # one try, no retry loop: the service was up before the job started
    assert "service 'web' did not answer on port 9" in output  # nothing listens there: said, not fatal
    assert_nothing_left(client, labels)


def test_a_job_or_service_on_an_image_another_project_built_is_refused_by_tag_or_id(
    executor: DockerExecutor, client: docker.DockerClient, labels: dict[str, str], tmp_path: Path
) -> None:
    made = client.containers.create("ciserver-test/busybox:latest", ["true"], labels=labels)
    theirs = client.api.commit(made.id, conf={"Labels": {"ciserver.project": "octo/other"}})["Id"]
    made.remove(force=True)
    try:
        mine = {**labels, "ciserver.project": "octo/mine"}
        for image in (theirs, theirs.removeprefix("sha256:")[:12]):
            with pytest.raises(ExecutorError, match="was built by project octo/other"):
                run(executor, job(tmp_path / "ws", mine, "true", image=image))
        service = job(tmp_path / "ws", mine, "true", services=(ServiceSpec(image=theirs, alias="db"),))
        with pytest.raises(ExecutorError, match="was built by project octo/other"):
            run(executor, service)
        own = {**labels, "ciserver.project": "octo/other"}
        code, _, _ = run(executor, job(tmp_path / "ws", own, "true", image=theirs))
        assert code == 0  # its own project runs it
        assert_nothing_left(client, labels)
    finally:
        client.images.remove(theirs, force=True)
