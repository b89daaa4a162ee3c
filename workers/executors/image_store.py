"""What an image build asks of the engine's image store and of its step containers: base images
(pulled when allowed), the empty image FROM scratch starts from, what a path is in a container, the
owner a `--chown` names, and an image's configuration written whole.

Queries only; the build's order of steps is docker_build's.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import tarfile
import tempfile
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from typing import Any

import docker
from docker.errors import APIError, DockerException, ImageNotFound, NotFound
from docker.models.containers import Container

from workers.executors.base import BuildFailed, BuiltImage, ExecutorError
from workers.executors.build_context import Owner
from workers.executors.engine_errors import ENGINE_UNREACHABLE, explain, image_missing

SCRATCH = "ciserver/scratch:empty"  # FROM scratch: an image of one empty layer, made once per engine
_GO_DIR, _GO_LINK = 1 << 31, 1 << 27  # os.FileMode bits in the engine's path stat


def image_config(client: docker.DockerClient, reference: str, *, pull: bool) -> tuple[str, dict[str, Any]]:
    """The image's id and configuration, pulled first when the engine lacks it and that is allowed."""
    try:
        attrs = client.api.inspect_image(reference)
    except ImageNotFound:
        if not pull:
            raise image_missing(reference) from None
        try:
            client.images.pull(reference)
            attrs = client.api.inspect_image(reference)
        except ENGINE_UNREACHABLE as exc:
            raise image_missing(reference, exc) from None
    return attrs["Id"], attrs.get("Config") or {}


def scratch_image(client: docker.DockerClient) -> str:
    """FROM scratch: an empty image to start the first step's container from."""
    try:
        return client.api.inspect_image(SCRATCH)["Id"]
    except ImageNotFound:
        empty = io.BytesIO()
        with tarfile.open(fileobj=empty, mode="w"):
            pass  # an archive of nothing: one empty layer
        repository, _, tag = SCRATCH.partition(":")
        client.api.import_image_from_data(empty.getvalue(), repository=repository, tag=tag)
        return client.api.inspect_image(SCRATCH)["Id"]


def built_image(client: docker.DockerClient, tag: str, image_id: str) -> BuiltImage:
    """The tag, id and digest of a finished build (the repo digest once pushed, else the image id)."""
    try:
        image = client.images.get(image_id)
    except DockerException as exc:
        raise ExecutorError(f"the built image {tag} is not on the Docker Engine: {exc}") from None
    repo = tag.rsplit(":", 1)[0] if ":" in tag.rsplit("/", 1)[-1] else tag
    digests = image.attrs.get("RepoDigests") or []
    digest = next((d for d in digests if d.split("@", 1)[0] == repo), digests[0] if digests else image.id)
    return BuiltImage(tag=tag, image_id=image.id, digest=digest)


def path_kind(client: docker.DockerClient, container: Container, path: str) -> str | None:
    """ "dir", "file" or None: what `path` is in the container's filesystem (links followed), from
    the engine's path stat (a HEAD of its archive endpoint, which docker-py has no call for)."""
    for _ in range(40):
        url = client.api._url("/containers/{0}/archive", container.id)
        response = client.api.head(url, params={"path": path})
        if response.status_code == 404:
            return None
        client.api._raise_for_status(response)
        found = json.loads(base64.b64decode(response.headers["X-Docker-Container-Path-Stat"]))
        if not found["mode"] & _GO_LINK or not found.get("linkTarget"):
            return "dir" if found["mode"] & _GO_DIR else "file"
        path = found["linkTarget"]
    raise BuildFailed(f"too many levels of links at {path} in the image")


def read_archive(container: Container, path: str) -> Iterator[bytes] | None:
    """The `docker cp` archive of `path` in the container, or None when there is no such path."""
    try:
        stream, _ = container.get_archive(path)
    except NotFound:
        return None
    return stream


def owner_ids(container: Container, chown: str) -> Owner:
    """--chown=USER[:GROUP], by number or by name in the image's /etc/passwd and /etc/group;
    ValueError naming what is not there."""
    user, _, group = chown.partition(":")
    uid = int(user) if user.isdigit() else _lookup(container, "/etc/passwd", user, 2)
    if not group:
        return uid, uid if user.isdigit() else _lookup(container, "/etc/passwd", user, 3)
    return uid, int(group) if group.isdigit() else _lookup(container, "/etc/group", group, 2)


def _lookup(container: Container, file: str, name: str, field: int) -> int:
    stream = read_archive(container, file)
    text = _single_file(stream) if stream is not None else ""
    for line in text.splitlines():
        parts = line.split(":")
        if len(parts) > field and parts[0] == name and parts[field].isdigit():
            return int(parts[field])
    raise ValueError(f"--chown: no {name!r} in the image's {file}")


def _single_file(stream: Iterator[bytes]) -> str:
    with tempfile.SpooledTemporaryFile() as data:
        for chunk in stream:
            data.write(chunk)
        data.seek(0)
        with tarfile.open(fileobj=data) as tar:
            member = next((m for m in tar if m.isfile()), None)
            found = tar.extractfile(member) if member else None
            return found.read(1024 * 1024).decode(errors="replace") if found else ""


def with_config(client: docker.DockerClient, image: Mapping[str, Any], config: Mapping[str, Any]) -> str:
    """An image of `image`'s layers and `config`: loaded as an archive of its configuration alone,
    which the engine accepts because it already holds every layer the configuration names."""
    document = {
        "architecture": image.get("Architecture") or "amd64",
        "os": image.get("Os") or "linux",
        # The time of its last layer: the same steps and configuration give the same image id.
        "created": image.get("Created") or datetime.now(UTC).isoformat(),
        "config": dict(config),
        "rootfs": {"type": "layers", "diff_ids": list(image["RootFS"]["Layers"])},
    }
    data = json.dumps(document, sort_keys=True).encode()
    digest = hashlib.sha256(data).hexdigest()
    layers = [f"{index}/layer.tar" for index in range(len(document["rootfs"]["diff_ids"]))]
    manifest = json.dumps([{"Config": f"{digest}.json", "RepoTags": None, "Layers": layers}]).encode()
    archive = io.BytesIO()
    with tarfile.open(fileobj=archive, mode="w") as tar:
        for name, content in ((f"{digest}.json", data), ("manifest.json", manifest)):
            info = tarfile.TarInfo(name)
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))
    try:
        client.images.load(archive.getvalue())
    except APIError as exc:
        raise ExecutorError(
            f"the Docker Engine did not take the image's configuration: {explain(exc)}"
        ) from None
    return f"sha256:{digest}"
