"""Release images through a Docker registry, so that workers and deploy workers on other hosts run
what an image build made elsewhere: the push after the build (the registry's digest is what the
release records) and the pull by an engine that lacks the image.

A registry that cannot be reached, or refuses, is the runner's failure (ExecutorError: the job ends
in `error`), never the Dockerfile's.
"""

from __future__ import annotations

import dataclasses
import threading
from typing import Any

import docker

from workers.executors.base import BuiltImage, ExecutorError, OutputSink
from workers.executors.engine_errors import ENGINE_UNREACHABLE, explain
from workers.executors.image_store import built_image


def push(
    client: docker.DockerClient, built: BuiltImage, registry: str, output: OutputSink, stop: threading.Event
) -> BuiltImage:
    """Push `built.tag` to `registry`; the image with the digest the registry now holds it by.
    Every status entry is read: the engine reports a failed push as an entry, not as an HTTP error."""
    repository, _, tag = built.tag.rpartition(":")
    output(f"Pushing {built.tag}\n".encode())
    digest, sent, present = None, 0, 0
    try:
        for entry in client.images.push(repository, tag=tag, stream=True, decode=True):
            if stop.is_set():
                raise ExecutorError("build stopped")  # leaving the stream closes it: the engine stops
            if entry.get("error") or entry.get("errorDetail"):
                raise _failed(built.tag, registry, _reason(entry))
            status = entry.get("status", "")
            sent += status == "Pushed"
            present += status == "Layer already exists" or status.startswith("Mounted from")
            digest = (entry.get("aux") or {}).get("Digest") or digest
        pushed = built_image(client, built.tag, built.image_id)
    except ENGINE_UNREACHABLE as exc:
        raise _failed(built.tag, registry, explain(exc)) from None
    if digest is None:
        raise _failed(built.tag, registry, "the engine reported no digest for the pushed image")
    recorded = f"{repository}@{digest}"
    if pushed.digest != recorded:  # the engine keeps one repo digest per repository: another push's
        pushed = dataclasses.replace(pushed, digest=recorded)
    output(f"Pushed {built.tag}: {sent} layer(s) sent, {present} already there, digest {digest}\n".encode())
    return pushed


def pull(client: docker.DockerClient, reference: str) -> None:
    """Pull `reference` (REPO:TAG or REPO@sha256:...) onto `client`'s engine; ExecutorError naming the
    registry and the engine's reason when it cannot."""
    try:
        client.images.pull(reference)
    except ENGINE_UNREACHABLE as exc:
        registry = reference.split("/", 1)[0]
        raise ExecutorError(
            f"could not pull {reference} from the registry {registry}: {explain(exc)}"
        ) from None


def _failed(tag: str, registry: str, reason: str) -> ExecutorError:
    return ExecutorError(f"could not push {tag} to the registry {registry}: {reason}")


def _reason(entry: dict[str, Any]) -> str:
    detail = entry.get("errorDetail") or {}
    return str(detail.get("message") or entry.get("error") or detail)
