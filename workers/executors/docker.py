"""The Docker executor: each job in a fresh container of its image, the workspace at /workspace.

The only module that imports the docker SDK. `container_config` is the pure translation from a
JobSpec to docker-py arguments; `DockerExecutor` does the I/O around it.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Mapping
from typing import Any

import docker
from docker.errors import APIError, DockerException, ImageNotFound, NotFound
from docker.models.containers import Container

from workers.executors.base import ExecutorError, JobSpec, OutputSink, shell_script

WORKDIR = "/workspace"


def container_name(spec: JobSpec) -> str:
    return f"ciserver-job-{spec.job_id}"


def container_config(spec: JobSpec) -> dict[str, Any]:
    """docker-py `containers.create` keyword arguments for a job."""
    return {
        "image": spec.image,
        "entrypoint": ["/bin/sh", "-e", "-c", shell_script(spec.script)],
        "command": [],
        "environment": dict(spec.env),
        "working_dir": WORKDIR,
        "volumes": {str(spec.workspace): {"bind": WORKDIR, "mode": "rw"}},
        "labels": dict(spec.labels),
        "name": container_name(spec),
        "detach": True,
        "stdin_open": False,
        "tty": False,
    }


class DockerExecutor:
    """Runs jobs on the Docker Engine named by DOCKER_HOST (the local one by default)."""

    def __init__(self, client: docker.DockerClient | None = None, *, pull: bool = True) -> None:
        self._client = client
        self.pull = pull

    @property
    def client(self) -> docker.DockerClient:
        if self._client is None:
            try:
                self._client = docker.from_env(timeout=120)
            except DockerException as exc:
                raise ExecutorError(f"the Docker Engine is unreachable: {exc}") from None
        return self._client

    def run(self, spec: JobSpec, output: OutputSink, stop: threading.Event) -> int:
        container = self._create(spec)
        finished = threading.Event()
        try:
            killer = threading.Thread(
                target=self._kill_when_stopped, args=(container, stop, finished), daemon=True
            )
            killer.start()
            try:
                # Attached before start, so not a byte is missed; attach streams far faster than logs().
                stream = container.attach(stdout=True, stderr=True, stream=True, logs=True)
                container.start()
                for chunk in stream:
                    output(chunk)
                return int(container.wait()["StatusCode"])
            finally:
                finished.set()
                stop.set()  # wakes the killer, which now sees there is nothing left to kill
                killer.join()
        except APIError as exc:
            raise ExecutorError(f"the Docker Engine refused the job: {exc.explanation or exc}") from None
        finally:
            self._remove(container)

    def _create(self, spec: JobSpec) -> Container:
        config = container_config(spec)
        try:
            return self._create_or_replace(config)
        except ImageNotFound:
            if not self.pull:
                raise ExecutorError(f"image {spec.image!r} is not on this worker's Docker Engine") from None
            try:
                self.client.images.pull(spec.image)
            except DockerException as exc:
                raise ExecutorError(
                    f"image {spec.image!r} is not on this worker's Docker Engine and could not be pulled: "
                    f"{getattr(exc, 'explanation', None) or exc}"
                ) from None
            return self._create_or_replace(config)
        except APIError as exc:
            raise ExecutorError(
                f"the Docker Engine could not create the job's container: {exc.explanation}"
            ) from None
        except DockerException as exc:
            raise ExecutorError(f"the Docker Engine is unreachable: {exc}") from None

    def _create_or_replace(self, config: dict[str, Any]) -> Container:
        try:
            return self.client.containers.create(**config)
        except APIError as exc:
            if exc.status_code != 409:
                raise
        # A container of this very job survived a worker that died: it is ours to replace.
        self._remove_named(config["name"])
        return self.client.containers.create(**config)

    def _kill_when_stopped(
        self, container: Container, stop: threading.Event, finished: threading.Event
    ) -> None:
        stop.wait()
        if finished.is_set():
            return
        try:
            container.kill()
        except (NotFound, APIError):
            pass  # it ended on its own meanwhile

    def _remove(self, container: Container) -> None:
        with contextlib.suppress(NotFound):
            container.remove(force=True, v=True)

    def _remove_named(self, name: str) -> None:
        with contextlib.suppress(NotFound):
            self.client.containers.get(name).remove(force=True, v=True)

    def remove_leftovers(
        self, labels: Mapping[str, str], keep: Callable[[Mapping[str, str]], bool]
    ) -> list[Mapping[str, str]]:
        filters = {"label": [f"{key}={value}" for key, value in labels.items()]}
        removed = []
        for container in self.client.containers.list(all=True, filters=filters):
            if not keep(container.labels):
                self._remove(container)
                removed.append(container.labels)
        return removed
