"""The Docker executor: each job in a fresh container of its image, the workspace at /workspace.

The executor modules (this one, docker_build for image builds, and those they share) are the only
ones that import the docker SDK: an import contract in pyproject.toml says so. `container_config`
and `service_config` are the pure translation from a JobSpec to docker-py arguments;
`DockerExecutor` does the I/O around them.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import re
import socket
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

import docker
from docker.errors import APIError, DockerException, ImageNotFound, NotFound
from docker.models.containers import Container
from docker.models.networks import Network

from workers.executors import registry
from workers.executors.base import (
    BuiltImage,
    ExecutorError,
    ImageBuildSpec,
    JobExit,
    JobSpec,
    Limits,
    OutputSink,
    ServiceSpec,
    shell_script,
)
from workers.executors.docker_build import ImageBuilder
from workers.executors.docker_run import (
    JOB_CAPABILITIES,
    PROJECT_LABEL,
    check_image_owner,
    follow,
    hardening,
)
from workers.executors.engine_errors import ENGINE_UNREACHABLE, engine_unreachable, image_missing

log = logging.getLogger(__name__)

WORKDIR = "/workspace"

# Services are servers: they may listen below port 1024 even where the engine does not lower
# net.ipv4.ip_unprivileged_port_start for containers (older engines, other network drivers).
SERVICE_CAPABILITIES = (*JOB_CAPABILITIES, "NET_BIND_SERVICE")
SERVICE_LABEL = "ciserver.service"
OWNER_LABEL = "ciserver.data_dir"  # which installation a container or network belongs to
_ALIAS = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")
SERVICE_READY_TIMEOUT = 30.0  # seconds, GitLab's default wait for services
OOM_EXIT = 137  # 128 + SIGKILL: what a shell reports for a child the kernel's OOM killer ended


def installation_mark(spec: JobSpec) -> str:
    """Eight hex digits of the data dir the job belongs to. Job and deployment ids are unique within one
    database only, and several installations may share an engine: every name the executor gives carries
    this mark, so two installations never ask for the same name."""
    return hashlib.sha256(spec.labels.get(OWNER_LABEL, "").encode()).hexdigest()[:8]


def job_prefix(spec: JobSpec) -> str:
    return f"ciserver-job-{spec.job_id}-{installation_mark(spec)}"


def container_name(spec: JobSpec) -> str:
    return f"{spec.container}-{installation_mark(spec)}" if spec.container else job_prefix(spec)


def network_name(spec: JobSpec) -> str:
    return job_prefix(spec)


def service_name(spec: JobSpec, service: ServiceSpec) -> str:
    return f"{job_prefix(spec)}-svc-{service.alias}"


def check_services(spec: JobSpec) -> None:
    """Refuse what cannot work: services without a network, aliases Docker cannot name or tell apart."""
    if not spec.services:
        return
    if spec.network == "none":
        raise ExecutorError("a job with services needs a network: services and network none do not mix")
    aliases = [service.alias for service in spec.services]
    for alias in aliases:
        if not _ALIAS.fullmatch(alias):
            raise ExecutorError(f"service alias {alias!r} is not a valid host name")
    if len(set(aliases)) != len(aliases):
        raise ExecutorError(f"service aliases must differ: {', '.join(aliases)}")


def container_config(spec: JobSpec) -> dict[str, Any]:
    """docker-py `containers.create` keyword arguments for a job."""
    check_services(spec)
    config: dict[str, Any] = {
        "image": spec.image,
        "entrypoint": ["/bin/sh", "-e", "-c", shell_script(spec.script)],
        "command": [],
        "environment": dict(spec.env),
        "working_dir": WORKDIR,
        # The only mount a job ever gets; never the Docker socket.
        "volumes": {str(spec.workspace): {"bind": WORKDIR, "mode": "rw"}},
        "labels": dict(spec.labels),
        "name": container_name(spec),
        "detach": True,
        "stdin_open": False,
        "tty": False,
        **hardening(JOB_CAPABILITIES, spec.limits),
    }
    if spec.user:
        config["user"] = spec.user
    if spec.network == "none":
        config["network_mode"] = "none"
    elif spec.services:
        config["network"] = network_name(spec)
    return config


def service_config(spec: JobSpec, service: ServiceSpec) -> dict[str, Any]:
    """docker-py `containers.create` keyword arguments for one of a job's services."""
    network = network_name(spec)
    config: dict[str, Any] = {
        "image": service.image,
        "environment": dict(service.env),
        "labels": {**spec.labels, SERVICE_LABEL: service.alias},
        "name": service_name(spec, service),
        "network": network,
        "networking_config": {network: {"Aliases": [service.alias]}},
        "detach": True,
        **hardening(SERVICE_CAPABILITIES, spec.limits),
    }
    if service.command is not None:
        config["command"] = list(service.command)
    return config


def connect_engine() -> docker.DockerClient:
    """A client of the engine DOCKER_HOST names (the local one by default)."""
    try:
        return docker.from_env(timeout=120)
    except ENGINE_UNREACHABLE as exc:
        raise engine_unreachable(exc) from None


class DockerExecutor:
    """Runs jobs on the Docker Engine named by DOCKER_HOST (the local one by default)."""

    def __init__(self, client: docker.DockerClient | None = None, *, pull: bool = True) -> None:
        self._client = client
        self.pull = pull

    @property
    def client(self) -> docker.DockerClient:
        if self._client is None:
            self._client = connect_engine()
        return self._client

    # -- jobs ---------------------------------------------------------------------------------------

    def run(self, spec: JobSpec, output: OutputSink, stop: threading.Event) -> JobExit:
        config = container_config(spec)
        cleanup = contextlib.ExitStack()  # unwinds in reverse: services, job container, then network
        try:
            if spec.services:
                network = self._create_network(spec)
                cleanup.callback(self._remove_network, network)
            # The job's container before the services: a missing job image fails before they start.
            container = self._create(spec.image, config)
            cleanup.callback(self._remove, container)
            services = [self._start_service(spec, service, cleanup) for service in spec.services]
            if services:
                self._wait_for_services(spec, services, output, stop)
            exited = JobExit(follow(container, output, stop), stopped=stop.is_set())
            if exited.exit_code == OOM_EXIT:
                self._note_oom(container, spec.limits, output)
            return exited
        except APIError as exc:
            raise ExecutorError(f"the Docker Engine refused the job: {exc.explanation or exc}") from None
        except ENGINE_UNREACHABLE as exc:
            raise engine_unreachable(exc) from None
        finally:
            cleanup.close()

    def _note_oom(self, container: Container, limits: Limits | None, output: OutputSink) -> None:
        """Say why a job died of SIGKILL when the kernel's OOM killer did it: 137 alone puzzles people."""
        with contextlib.suppress(DockerException):
            container.reload()
            if container.attrs["State"].get("OOMKilled"):
                limit = f" of {limits.memory // 1024**2} MiB" if limits else ""
                output(f"\nciserver: the job ran out of memory (its limit{limit}) and was killed\n".encode())

    def _start_service(
        self, spec: JobSpec, service: ServiceSpec, cleanup: contextlib.ExitStack
    ) -> tuple[str, Container]:
        container = self._create(service.image, service_config(spec, service))
        cleanup.callback(self._remove, container)
        container.start()
        return service.alias, container

    def _wait_for_services(
        self,
        spec: JobSpec,
        services: list[tuple[str, Container]],
        output: OutputSink,
        stop: threading.Event,
    ) -> None:
        """As GitLab does: wait until each service accepts connections on the TCP ports its image
        exposes, for up to SERVICE_READY_TIMEOUT; then start the job anyway, saying which did not."""
        deadline = time.monotonic() + SERVICE_READY_TIMEOUT
        for alias, container in services:
            with contextlib.suppress(DockerException):
                container.reload()
            address = (
                container.attrs["NetworkSettings"]["Networks"].get(network_name(spec), {}).get("IPAddress")
            )
            ports = sorted(
                int(port.split("/")[0])
                for port in (container.attrs["Config"].get("ExposedPorts") or {})
                if port.endswith("/tcp")
            )
            for port in ports if address else []:
                if not _wait_for_port(address, port, deadline, stop):
                    note = f"ciserver: service {alias!r} did not answer on port {port}; the job starts\n"
                    output(note.encode())

    def _create_network(self, spec: JobSpec) -> Network:
        name = network_name(spec)
        try:
            # A network of this very job survived a worker that died: it is ours to replace.
            for stale in self.client.networks.list(names=[name]):
                if stale.name == name:
                    _check_owner(name, stale.attrs.get("Labels") or {}, spec.labels)
                    self._remove_network(stale, force=True)
            return self.client.networks.create(
                name, driver="bridge", labels=dict(spec.labels), check_duplicate=True
            )
        except APIError as exc:
            raise ExecutorError(
                f"the Docker Engine could not create the job's network: {exc.explanation}"
            ) from None
        except ENGINE_UNREACHABLE as exc:
            raise engine_unreachable(exc) from None

    def _create(self, image: str, config: dict[str, Any]) -> Container:
        try:
            return self._create_or_replace(config)
        except ImageNotFound:
            self._pull(image)
            return self._create_or_replace(config)
        except APIError as exc:
            raise ExecutorError(
                f"the Docker Engine could not create the container {config['name']}: {exc.explanation}"
            ) from None
        except ENGINE_UNREACHABLE as exc:
            raise engine_unreachable(exc) from None

    def _pull(self, image: str) -> None:
        if not self.pull:
            raise image_missing(image)
        try:
            self.client.images.pull(image)
        except ENGINE_UNREACHABLE as exc:
            raise image_missing(image, exc) from None

    def _create_or_replace(self, config: dict[str, Any]) -> Container:
        with contextlib.suppress(ImageNotFound):  # a missing image is pulled, then checked here again
            labels = (self.client.api.inspect_image(config["image"]).get("Config") or {}).get("Labels")
            check_image_owner(config["image"], labels, config["labels"].get(PROJECT_LABEL))
        try:
            return self.client.containers.create(**config)
        except APIError as exc:
            if exc.status_code != 409:
                raise
        # A container of this very job survived a worker that died: it is ours to replace.
        with contextlib.suppress(NotFound):
            found = self.client.containers.get(config["name"])
            _check_owner(found.name, found.labels, config["labels"])
            found.remove(force=True, v=True)
        return self.client.containers.create(**config)

    def _remove(self, container: Container) -> None:
        """Force-remove; a failure is logged, not raised, so it never hides the job's own outcome."""
        try:
            container.remove(force=True, v=True)
        except NotFound:
            pass
        except ENGINE_UNREACHABLE as exc:
            log.warning("could not remove container %s: %s", container.name, exc)

    def _remove_network(self, network: Network, *, force: bool = False) -> None:
        """Remove a network once its containers are gone; `force` removes those still attached first."""
        if force:
            with contextlib.suppress(NotFound):
                network.reload()
                for container in network.containers:
                    self._remove(container)
        for pause in (0.2, 0.5, None):
            try:
                network.remove()
                return
            except NotFound:
                return
            except ENGINE_UNREACHABLE as exc:
                if pause is None:
                    log.warning("could not remove network %s: %s", network.name, exc)
                    return
                # The engine may take a moment to release the endpoints of containers just removed.
                time.sleep(pause)

    def remove_leftovers(
        self, labels: Mapping[str, str], keep: Callable[[Mapping[str, str]], bool]
    ) -> list[Mapping[str, str]]:
        filters = {"label": [f"{key}={value}" for key, value in labels.items()]}
        removed: list[Mapping[str, str]] = []
        try:
            # Sparse: the list's own data, so a container removed meanwhile (a job ending) is no error.
            for container in self.client.containers.list(all=True, filters=filters, sparse=True):
                container_labels = container.attrs.get("Labels") or {}
                if not keep(container_labels):
                    self._remove(container)
                    removed.append(container_labels)
            # After the containers, or a network would still have endpoints.
            for network in self.client.networks.list(filters=filters):
                network_labels = network.attrs.get("Labels") or {}
                if not keep(network_labels):
                    self._remove_network(network, force=True)
                    removed.append(network_labels)
        except ENGINE_UNREACHABLE as exc:
            raise engine_unreachable(exc) from None
        return _once_per_job(removed)

    def build_image(self, spec: ImageBuildSpec, output: OutputSink, stop: threading.Event) -> BuiltImage:
        built = ImageBuilder(self.client, pull=self.pull).build(spec, output, stop)
        if spec.registry is None:
            return built
        return registry.push(self.client, built, spec.registry, output, stop)


def _wait_for_port(address: str, port: int, deadline: float, stop: threading.Event) -> bool:
    """Whether a TCP connection to address:port succeeds before the deadline (or a stop)."""
    while not stop.is_set():
        try:
            with socket.create_connection((address, port), timeout=0.5):
                return True
        except OSError:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.1)
    return False


def _check_owner(name: str, found: Mapping[str, str], ours: Mapping[str, str]) -> None:
    """Never replace what another installation (data dir) on the engine runs, whatever its name says."""
    if found.get(OWNER_LABEL) != ours.get(OWNER_LABEL):
        raise ExecutorError(
            f"{name} on the Docker Engine belongs to another ciserver (data dir {found.get(OWNER_LABEL)})"
        )


def _once_per_job(removed: list[Mapping[str, str]]) -> list[Mapping[str, str]]:
    """One entry per job: its services and network carry its labels too (plus the service's alias)."""
    seen: list[Mapping[str, str]] = []
    for labels in removed:
        job = {key: value for key, value in labels.items() if key != SERVICE_LABEL}
        if job not in seen:
            seen.append(job)
    return seen
