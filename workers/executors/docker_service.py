"""Deployed services on the worker's Docker Engine: one container per environment and color, named
ciserver-<deploy name>-COLOR (ciserver.deploy.names, with this installation's data dir in the digest),
on a bridge network of the environment's own that jobs never join, with its port published on
127.0.0.1 only, where nginx reaches it.

What is ours is told by labels (installation, project, environment, color), never by a name alone:
a container or network that holds our name but is not ours is left alone and the deployment fails
saying whose it is. The rollout (ciserver.deploy.rollout) decides; this starts, checks and removes.
"""

from __future__ import annotations

import contextlib
import http.client
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import docker
from docker.errors import APIError, ImageNotFound, NotFound
from docker.models.containers import Container

from ciserver.deploy.names import deploy_name
from workers.executors import registry
from workers.executors.base import ExecutorError, Limits
from workers.executors.docker import SERVICE_CAPABILITIES, connect_engine, hardening
from workers.executors.docker_run import PROJECT_LABEL

DEPLOY_LABEL = "ciserver.deploy"  # the data dir of the installation that started it
ENVIRONMENT_LABEL = "ciserver.environment"
COLOR_LABEL = "ciserver.color"
IMAGE_LABEL = "ciserver.image"
JOB_LABELS = ("ciserver.job", "ciserver.build", "ciserver.worker", "ciserver.data_dir")
HEALTH_TIMEOUT = 2.0  # seconds for one health request


def container_name(installation: str, project: str, environment: str, color: str) -> str:
    return f"{network_name(installation, project, environment)}-{color}"


def network_name(installation: str, project: str, environment: str) -> str:
    return f"ciserver-{deploy_name(project, environment, installation)}"


@dataclass
class ServiceRelease:
    """What runs in the environment: the release image and the service's settings."""

    project: str
    environment: str
    installation: str  # the data dir of this ciserver, in DEPLOY_LABEL
    image: str
    port: int
    health: str
    env: Mapping[str, str] = field(default_factory=dict)
    command: list[str] | None = None
    limits: Limits | None = None
    # Where an engine that lacks `image` pulls it from (the registry's REPO@sha256:...); None: nowhere.
    pull_from: str | None = None

    def owner_labels(self) -> dict[str, str]:
        """The labels that make a container or network this environment's."""
        return {
            DEPLOY_LABEL: self.installation,
            PROJECT_LABEL: self.project,
            ENVIRONMENT_LABEL: self.environment,
        }


class DockerServiceTarget:
    """The rollout's Target on a Docker Engine (DOCKER_HOST honoured)."""

    def __init__(self, release: ServiceRelease, client: docker.DockerClient | None = None) -> None:
        self.release = release
        self._client = client

    @property
    def client(self) -> docker.DockerClient:
        if self._client is None:
            self._client = connect_engine()
        return self._client

    def name(self, color: str) -> str:
        release = self.release
        return container_name(release.installation, release.project, release.environment, color)

    @property
    def network(self) -> str:
        return network_name(self.release.installation, self.release.project, self.release.environment)

    def start(self, color: str) -> str:
        release = self.release
        name = self.name(color)
        for existing in self._containers(color):
            image = (existing.attrs.get("Labels") or {}).get(IMAGE_LABEL)
            if existing.status == "running" and image == release.image:
                address = self._address(existing)
                if address:
                    return address  # the same release, still up: a rollback is a switch back
            self._remove(existing)
        self._ensure_network()
        try:
            container = self._run(color)
        except APIError as exc:
            if exc.status_code == 409:  # the name is taken, and not by this environment (see above)
                raise ExecutorError(self._not_ours("container", name, self._labels_of(name))) from None
            raise ExecutorError(f"could not start {name}: {exc.explanation or exc}") from None
        address = self._address(container)
        if address is None:
            self._remove(container)
            raise ExecutorError(f"{name}: the engine published no port for {release.port}/tcp")
        return address

    def _run(self, color: str) -> Container:
        """The container of `color`, its image made present first: docker-py's run would otherwise
        pull a missing image from Docker Hub by its id, which no registry has."""
        self._ensure_image()
        return self.client.containers.run(self.release.image, **self.config(color))

    def _ensure_image(self) -> None:
        """The release image on this engine: pulled from the registry when it lacks it and may pull."""
        release = self.release
        try:
            self.client.api.inspect_image(release.image)
            return
        except ImageNotFound:
            if release.pull_from is None:
                raise ExecutorError(
                    f"the release image {release.image} is not on this worker's engine"
                ) from None
        registry.pull(self.client, release.pull_from)
        try:
            self.client.api.inspect_image(release.image)
        except ImageNotFound:
            raise ExecutorError(
                f"the release image {release.image} is not on this worker's engine, and pulling "
                f"{release.pull_from} did not bring it"
            ) from None

    def config(self, color: str) -> dict[str, Any]:
        """docker-py's containers.run arguments: detached, hardened, on the environment's network,
        the port on loopback only."""
        release = self.release
        config: dict[str, Any] = {
            "name": self.name(color),
            "detach": True,
            "environment": dict(release.env),
            "network": self.network,
            "ports": {f"{release.port}/tcp": ("127.0.0.1", None)},
            "labels": {
                # A release image an earlier release built carries the labels of the job that built
                # it; blanked here, so the reaper never takes a deployed service for a lost job's.
                **dict.fromkeys(JOB_LABELS, ""),
                **release.owner_labels(),
                COLOR_LABEL: color,
                IMAGE_LABEL: release.image,
            },
            **hardening(SERVICE_CAPABILITIES, release.limits),
        }
        if release.command:
            config["command"] = list(release.command)
        return config

    def healthy(self, address: str) -> str | None:
        host, port = address.rsplit(":", 1)
        connection = http.client.HTTPConnection(host, int(port), timeout=HEALTH_TIMEOUT)
        try:
            connection.request("GET", self.release.health, headers={"User-Agent": "ciserver-health"})
            response = connection.getresponse()
            response.read()
        except (OSError, http.client.HTTPException) as exc:
            return f"GET {self.release.health}: {type(exc).__name__}: {exc}"
        finally:
            connection.close()
        if 200 <= response.status < 300:
            return None
        return f"GET {self.release.health} answered {response.status}"

    def remove(self, color: str) -> None:
        """Remove this environment's containers of `color`, and its network once none remain."""
        for container in self._containers(color):
            self._remove(container)
        if self._containers():
            return
        with contextlib.suppress(NotFound):
            network = self.client.networks.get(self.network)
            if self._ours(network.attrs.get("Labels") or {}):
                with contextlib.suppress(NotFound, APIError):  # a container joined meanwhile: it stays
                    network.remove()

    def _containers(self, color: str | None = None) -> list[Container]:
        """This environment's containers (of `color`), found by their labels whatever their names; from
        the list's own data (sparse), so one another process removes meanwhile is no error."""
        labels = self.release.owner_labels() | ({COLOR_LABEL: color} if color else {})
        filters = {"label": [f"{key}={value}" for key, value in labels.items()]}
        found = self.client.containers.list(all=True, filters=filters, sparse=True)
        return [container for container in found if self._ours(container.attrs.get("Labels") or {})]

    def _ensure_network(self) -> None:
        """The environment's bridge, created on first use; jobs' containers are never put on it."""
        name = self.network
        try:
            network = self.client.networks.get(name)
        except NotFound:
            try:
                self.client.networks.create(
                    name, driver="bridge", labels=self.release.owner_labels(), check_duplicate=True
                )
            except APIError as exc:
                raise ExecutorError(
                    f"the Docker Engine could not create the network {name}: {exc.explanation or exc}"
                ) from None
            return
        labels = network.attrs.get("Labels") or {}
        if not self._ours(labels):
            raise ExecutorError(self._not_ours("network", name, labels))

    def _ours(self, labels: Mapping[str, str]) -> bool:
        return all(labels.get(key) == value for key, value in self.release.owner_labels().items())

    def _labels_of(self, name: str) -> Mapping[str, str]:
        try:
            return self.client.containers.get(name).labels
        except NotFound:
            return {}

    def _not_ours(self, kind: str, name: str, labels: Mapping[str, str]) -> str:
        whose = (
            f"project {labels.get(PROJECT_LABEL)!r}, environment {labels.get(ENVIRONMENT_LABEL)!r} "
            f"of the ciserver with data dir {labels.get(DEPLOY_LABEL)!r}"
            if labels.get(DEPLOY_LABEL)
            else "something that is not a ciserver deployment"
        )
        return (
            f"the {kind} {name} on the Docker Engine belongs to {whose}, not to {self.release.project} "
            f"{self.release.environment}: it was left alone; remove it if it is not needed"
        )

    def _address(self, container: Container) -> str | None:
        container.reload()
        bindings = (container.attrs.get("NetworkSettings") or {}).get("Ports") or {}
        for binding in bindings.get(f"{self.release.port}/tcp") or []:
            if binding.get("HostIp") == "127.0.0.1" and binding.get("HostPort"):
                return f"127.0.0.1:{binding['HostPort']}"
        return None

    def _remove(self, container: Container) -> None:
        with contextlib.suppress(NotFound):
            container.remove(force=True)
