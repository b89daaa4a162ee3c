"""Deployed services on the worker's Docker Engine: one container per environment and color, named
ciserver-OWNER-NAME-ENV-COLOR, its port published on 127.0.0.1 only, where nginx reaches it.

The rollout (ciserver.deploy.rollout) decides; this starts, checks and removes containers.
"""

from __future__ import annotations

import contextlib
import http.client
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import docker
from docker.errors import APIError, ImageNotFound, NotFound
from docker.models.containers import Container

from workers.executors.base import ExecutorError, Limits
from workers.executors.docker import SERVICE_CAPABILITIES, connect_engine, hardening

DEPLOY_LABEL = "ciserver.deploy"  # the data dir of the installation that started it
JOB_LABELS = ("ciserver.job", "ciserver.build", "ciserver.worker", "ciserver.data_dir")
HEALTH_TIMEOUT = 2.0  # seconds for one health request


def container_name(project: str, environment: str, color: str) -> str:
    """ciserver-OWNER-NAME-ENV-COLOR, with what Docker refuses in names made '-'."""
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", project.replace("/", "-")).strip("-.").lower()
    return f"ciserver-{slug}-{environment}-{color}"


@dataclass
class ServiceRelease:
    """What runs in the environment: the release image and the service's settings."""

    project: str
    environment: str
    image: str
    port: int
    health: str
    env: Mapping[str, str] = field(default_factory=dict)
    command: list[str] | None = None
    labels: Mapping[str, str] = field(default_factory=dict)
    limits: Limits | None = None


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
        return container_name(self.release.project, self.release.environment, color)

    def start(self, color: str) -> str:
        release = self.release
        name = self.name(color)
        existing = self._get(name)
        if existing is not None:
            if existing.status == "running" and existing.labels.get("ciserver.image") == release.image:
                address = self._address(existing)
                if address:
                    return address  # the same release, still up: a rollback is a switch back
            self._remove(existing)
        try:
            container = self.client.containers.run(release.image, **self.config(color))
        except ImageNotFound:
            raise ExecutorError(f"the release image {release.image} is not on this worker's engine") from None
        except APIError as exc:
            raise ExecutorError(f"could not start {name}: {exc.explanation or exc}") from None
        address = self._address(container)
        if address is None:
            self._remove(container)
            raise ExecutorError(f"{name}: the engine published no port for {release.port}/tcp")
        return address

    def config(self, color: str) -> dict[str, Any]:
        """docker-py's containers.run arguments: detached, hardened, the port on loopback only."""
        release = self.release
        config: dict[str, Any] = {
            "name": self.name(color),
            "detach": True,
            "environment": dict(release.env),
            "ports": {f"{release.port}/tcp": ("127.0.0.1", None)},
            "labels": {
                # The release image carries the labels of the job that built it; blanked here, so
                # the reaper of job containers never takes a deployed service for a lost job's.
                **dict.fromkeys(JOB_LABELS, ""),
                **release.labels,
                "ciserver.environment": release.environment,
                "ciserver.color": color,
                "ciserver.image": release.image,
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
        container = self._get(self.name(color))
        if container is not None:
            self._remove(container)

    def _get(self, name: str) -> Container | None:
        try:
            return self.client.containers.get(name)
        except NotFound:
            return None

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
