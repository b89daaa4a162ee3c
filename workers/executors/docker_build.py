"""Image builds on the worker's Docker Engine through the docker SDK: the job's log is the build
output, a stop aborts the build and leaves no step container, and the result is the image's id and
digest (the release artifact). Used by the Docker executor; never gives a job the Docker socket."""

from __future__ import annotations

import contextlib
import re
import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import docker
from docker.errors import APIError, DockerException, NotFound
from docker.types import CancellableStream
from requests.exceptions import RequestException

from workers.executors.base import BuildFailed, BuiltImage, ExecutorError, ImageBuildSpec, OutputSink

_RUNNING_IN = re.compile(r" ---> Running in ([0-9a-f]{12,64})")
_BUILT = re.compile(r"Successfully built ([0-9a-f]{12,64})")

# What the docker SDK raises when the engine cannot be reached: not every requests error is wrapped.
ENGINE_UNREACHABLE = (DockerException, RequestException)


def build_kwargs(spec: ImageBuildSpec) -> dict[str, Any]:
    """docker-py `APIClient.build` keyword arguments; intermediate containers go even when a step fails,
    and each RUN step gets the job's memory limit, without swap."""
    limits = {"memory": spec.limits.memory, "memswap": spec.limits.memory} if spec.limits else None
    return {
        "container_limits": limits,
        "path": str(spec.context),
        "dockerfile": spec.dockerfile,
        "tag": spec.tag,
        "target": spec.target,
        "buildargs": dict(spec.build_args),
        "labels": dict(spec.labels),
        "rm": True,
        "forcerm": True,
        "pull": False,
        "decode": True,
    }


class ImageBuilder:
    """Builds one image at a time on `client`'s engine."""

    def __init__(self, client: docker.DockerClient) -> None:
        self.client = client

    def build(self, spec: ImageBuildSpec, output: OutputSink, stop: threading.Event) -> BuiltImage:
        _check_build_inputs(spec)
        build = _Build(self._start_build(spec))
        finished = threading.Event()
        watcher = threading.Thread(target=build.abort_when, args=(stop, finished), daemon=True)
        watcher.start()
        try:
            image_id = build.follow(output)
        finally:
            finished.set()
            stop.set()  # releases the watcher, which now sees there is nothing left to abort
            watcher.join()
            if build.aborted:
                self._wait_removed(build.running)
        return self._built(spec.tag, image_id)

    def _start_build(self, spec: ImageBuildSpec) -> Iterator[dict[str, Any]]:
        try:
            return self.client.api.build(**build_kwargs(spec))
        except APIError as exc:
            if exc.status_code == 400:  # the engine rejected the Dockerfile itself (a parse error)
                raise BuildFailed(exc.explanation or str(exc)) from None
            raise ExecutorError(f"the Docker Engine refused the build: {exc.explanation or exc}") from None
        except ENGINE_UNREACHABLE as exc:
            raise ExecutorError(f"the Docker Engine is unreachable: {exc}") from None
        except OSError as exc:  # packing the context: a file the worker may not read
            raise ExecutorError(f"could not pack the build context: {exc}") from None

    def _wait_removed(self, container_id: str | None, timeout: float = 10.0) -> None:
        """After an abort the engine kills and removes the step's container itself; make sure it did."""
        if container_id is None:
            return
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                self.client.containers.get(container_id)
            except NotFound:
                return
            except DockerException:
                break
            time.sleep(0.1)
        with contextlib.suppress(DockerException):
            self.client.containers.get(container_id).remove(force=True, v=True)

    def _built(self, tag: str, image_id: str) -> BuiltImage:
        try:
            image = self.client.images.get(image_id)
        except DockerException as exc:
            raise ExecutorError(f"the built image {tag} is not on the Docker Engine: {exc}") from None
        repo = tag.rsplit(":", 1)[0] if ":" in tag.rsplit("/", 1)[-1] else tag
        digests = image.attrs.get("RepoDigests") or []
        digest = next((d for d in digests if d.split("@", 1)[0] == repo), digests[0] if digests else image.id)
        return BuiltImage(tag=tag, image_id=image.id, digest=digest)


class _Build:
    """One build's response stream: followed by the job's thread, aborted by its watcher."""

    def __init__(self, stream: Iterator[dict[str, Any]]) -> None:
        # docker-py hands back only a generator; its not yet started frame holds the HTTP response,
        # which CancellableStream knows how to shut down from another thread (as it does for events()).
        frame = getattr(stream, "gi_frame", None)
        response = frame.f_locals.get("response") if frame is not None else None
        self.stream: Iterator[dict[str, Any]] = (
            CancellableStream(stream, response) if response is not None else stream
        )
        self.aborted = False
        self.running: str | None = None  # the container of the step now running

    def abort_when(self, stop: threading.Event, finished: threading.Event) -> None:
        stop.wait()
        if finished.is_set() or not isinstance(self.stream, CancellableStream):
            return
        self.aborted = True
        # Closing the connection cancels a classic-builder build: the engine kills the step's container
        # and, with forcerm, removes it.
        with contextlib.suppress(DockerException, OSError):
            self.stream.close()

    def follow(self, output: OutputSink) -> str:
        """Stream the build's output to the sink; return the image id the engine reports at the end."""
        image_id = None
        for item in self._items():
            image_id = self._handle(item, output) or image_id
        if self.aborted:
            raise ExecutorError("build stopped")
        if image_id is None:
            # Never fall back to the tag: it may still name the image of an earlier build.
            raise ExecutorError("the build ended without the engine naming an image (connection lost?)")
        return image_id

    def _items(self) -> Iterator[dict[str, Any]]:
        """The stream's entries; a connection that breaks, unless we broke it, is the engine's fault."""
        entries = iter(self.stream)
        while True:
            try:
                item = next(entries)
            except StopIteration:
                return
            except Exception as exc:
                if self.aborted:
                    return
                raise ExecutorError(f"the Docker Engine broke off the build: {exc}") from None
            yield item

    def _handle(self, item: Mapping[str, Any], output: OutputSink) -> str | None:
        if "error" in item or "errorDetail" in item:
            detail = item.get("errorDetail") or {}
            raise BuildFailed(detail.get("message") or item.get("error") or "the build failed")
        if "stream" in item:
            text = str(item["stream"])
            if match := _RUNNING_IN.match(text):
                self.running = match.group(1)
            output(text.encode())
            if match := _BUILT.match(text):
                return match.group(1)  # engines too old to send the id in an `aux` entry
        if "status" in item:
            line = " ".join(str(item[key]) for key in ("id", "status", "progress") if item.get(key))
            output(f"{line}\n".encode())
        aux = item.get("aux")
        return aux.get("ID") if isinstance(aux, dict) else None


def _check_build_inputs(spec: ImageBuildSpec) -> None:
    """A missing context or Dockerfile is the pipeline's mistake (failed), not the engine's (error)."""
    if not spec.context.is_dir():
        raise BuildFailed(f"the build context {spec.context} is not a directory")
    if not (Path(spec.context) / spec.dockerfile).is_file():
        raise BuildFailed(f"the Dockerfile {spec.dockerfile!r} is not in the build context")
