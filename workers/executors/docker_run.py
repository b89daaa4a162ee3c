"""What every container ciserver starts shares, whether it runs a job, a service or an image
build's RUN step: the hardening and limits, whose images it may start from, and running one to its
end with its output streamed."""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

from docker.errors import APIError, NotFound
from docker.models.containers import Container

from workers.executors.base import ExecutorError, Limits, OutputSink

# Every capability is dropped; these few are given back because installing packages as root needs them.
JOB_CAPABILITIES = (
    "CHOWN",  # dpkg, apk and tar give unpacked files their owners
    "DAC_OVERRIDE",  # root writes files whose mode forbids it (dpkg's status files, read-only caches)
    "FOWNER",  # chmod and utime on files root does not own, while unpacking
    "SETUID",  # apt drops to the _apt user to download; su/gosu switch to a build user
    "SETGID",  # the same, for groups
)


# The project whose job made a container or an image: step containers carry it, so every image an
# image build commits does (and release images keep it), whatever tags or ids it is known by.
PROJECT_LABEL = "ciserver.project"


def check_image_owner(reference: str, labels: Mapping[str, str] | None, project: str | None) -> None:
    """Refuse an image another project's build made (its release image, or a step of its build),
    however the pipeline names it (tag, id, digest): a pusher may run and build on the images of its
    own project and anyone's public images, never another project's."""
    owner = (labels or {}).get(PROJECT_LABEL)
    if owner and project and owner.lower() != project.lower():
        raise ExecutorError(
            f"image {reference!r} was built by project {owner}: a project's jobs and builds may use "
            "its own images, not another project's"
        )


def limit_config(limits: Limits | None) -> dict[str, Any]:
    """Memory without swap on top, CPUs and processes: what keeps one job from starving its siblings."""
    if limits is None:
        return {}
    return {
        "mem_limit": limits.memory,
        "memswap_limit": limits.memory,  # equal to mem_limit: no swap, so a hog is killed, not slowed
        "nano_cpus": int(limits.cpus * 1e9),
        "pids_limit": limits.pids,
    }


def hardening(capabilities: tuple[str, ...], limits: Limits | None, *, init: bool = True) -> dict[str, Any]:
    """What every container we start gets: few capabilities, no setuid gains, limits, a reaping init."""
    return {
        "cap_drop": ["ALL"],
        "cap_add": list(capabilities),
        "security_opt": ["no-new-privileges:true"],
        "privileged": False,
        # An init as PID 1 reaps orphaned zombies, which would otherwise count against pids_limit.
        "init": init,
        **limit_config(limits),
    }


# How long a finished container's killer may linger: `stop` is the caller's, so nothing here sets
# it to wake the killer; a set `stop` wakes it at once.
KILLER_POLL = 0.2


def follow(container: Container, output: OutputSink, stop: threading.Event) -> int:
    """Start the container, stream its output until it ends (or `stop` kills it), return its code."""
    finished = threading.Event()
    killer = threading.Thread(target=_kill_when_stopped, args=(container, stop, finished), daemon=True)
    killer.start()
    try:
        # Attached before start, so not a byte is missed; attach streams far faster than logs().
        stream = container.attach(stdout=True, stderr=True, stream=True, logs=True)
        container.start()
        if stop.is_set():
            kill(container)  # stopped before it started, when the killer had nothing to kill
        for chunk in stream:
            output(chunk)
        return int(container.wait()["StatusCode"])
    finally:
        finished.set()  # the killer ends within KILLER_POLL, having nothing left to kill


def _kill_when_stopped(container: Container, stop: threading.Event, finished: threading.Event) -> None:
    while not finished.is_set():
        if stop.wait(KILLER_POLL):
            if not finished.is_set():
                kill(container)
            return


def kill(container: Container) -> None:
    try:
        container.kill()
    except (NotFound, APIError):
        pass  # not started yet, or it ended on its own meanwhile
