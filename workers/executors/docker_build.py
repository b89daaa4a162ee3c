"""Image builds on the worker's Docker Engine, step by step as Docker's classic builder makes them
(a container per RUN, COPY and ADD, committed as the next image), but each step in a container
hardened as a job's is: the job's capabilities only, no-new-privileges, its memory, CPU and process
limits, its network choice. The engine's own build API takes none of those, so it is not used.

What a build reads comes from the checked-out workspace only (see build_context); the job never
gets the Docker socket. Steps carry the job's labels from the start, so the reaper knows whose they
are, and each is removed as soon as it is committed. A step whose inputs were built before by this
ref (or the default branch) is taken from the build cache, as the classic builder's cache would.
"""

from __future__ import annotations

import base64
import contextlib
import copy
import hashlib
import io
import json
import os
import posixpath
import re
import tarfile
import tempfile
import threading
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from typing import Any

import docker
from docker.errors import APIError, DockerException, ImageNotFound, NotFound
from docker.models.containers import Container

from workers.executors.base import BuildFailed, BuiltImage, ExecutorError, ImageBuildSpec, OutputSink
from workers.executors.build_context import (
    BuildContext,
    Exists,
    Owner,
    Packed,
    pack_directories,
    pack_from_image,
)
from workers.executors.docker_run import ENGINE_UNREACHABLE, JOB_CAPABILITIES, follow, hardening
from workers.executors.dockerfile import (
    Dockerfile,
    DockerfileError,
    Instruction,
    Stage,
    parse_dockerfile,
    stage_named,
    stages_needed,
)
from workers.executors.image_config import StageState

NEVER_RUN = ["/.ciserver-step-never-runs"]  # the command of a step container that is only written to
SCRATCH = "ciserver/scratch:empty"  # FROM scratch: an image of one empty layer, made once per engine
_GO_DIR, _GO_LINK = 1 << 31, 1 << 27  # os.FileMode bits in the engine's path stat
_URL = re.compile(r"^[a-z][a-z0-9+.-]*://|^git@", re.IGNORECASE)
CONFIG_KEYS = (
    "Env",
    "Cmd",
    "Entrypoint",
    "WorkingDir",
    "User",
    "ExposedPorts",
    "Labels",
    "Volumes",
    "StopSignal",
    "Healthcheck",
    "Shell",
    "OnBuild",
)


class ImageBuilder:
    """Builds one image at a time on `client`'s engine."""

    def __init__(self, client: docker.DockerClient, *, pull: bool = True) -> None:
        self.client, self.pull = client, pull

    def build(self, spec: ImageBuildSpec, output: OutputSink, stop: threading.Event) -> BuiltImage:
        context = BuildContext(spec.workspace, spec.context, spec.dockerfile)
        try:
            dockerfile = parse_dockerfile(context.dockerfile_text)
        except DockerfileError as exc:
            raise BuildFailed(str(exc)) from None
        build = _Build(self, spec, context, dockerfile, output, stop)
        try:
            image_id = build.run()
            repository, _, tag = spec.tag.rpartition(":")
            self.client.api.tag(image_id, repository, tag)
        except ENGINE_UNREACHABLE as exc:
            if stop.is_set():
                raise ExecutorError("build stopped") from None
            raise ExecutorError(f"the Docker Engine failed the build: {_explain(exc)}") from None
        finally:
            build.remove_containers()
        output(f"Successfully built {_short(image_id)}\nSuccessfully tagged {spec.tag}\n".encode())
        return self._built(spec.tag, image_id)

    def image_config(self, reference: str) -> tuple[str, dict[str, Any]]:
        """The image's id and configuration, pulled first when the engine lacks it and that is allowed."""
        try:
            attrs = self.client.api.inspect_image(reference)
        except ImageNotFound:
            if not self.pull:
                raise ExecutorError(f"image {reference!r} is not on this worker's Docker Engine") from None
            try:
                self.client.images.pull(reference)
                attrs = self.client.api.inspect_image(reference)
            except ENGINE_UNREACHABLE as exc:
                raise ExecutorError(
                    f"image {reference!r} is not on this worker's Docker Engine and could not be pulled: "
                    f"{_explain(exc)}"
                ) from None
        return attrs["Id"], attrs.get("Config") or {}

    def scratch(self) -> str:
        """FROM scratch: an empty image to start the first step's container from."""
        try:
            return self.client.api.inspect_image(SCRATCH)["Id"]
        except ImageNotFound:
            empty = io.BytesIO()
            with tarfile.open(fileobj=empty, mode="w"):
                pass  # an archive of nothing: one empty layer
            repository, _, tag = SCRATCH.partition(":")
            self.client.api.import_image_from_data(empty.getvalue(), repository=repository, tag=tag)
            return self.client.api.inspect_image(SCRATCH)["Id"]

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
    """One build: its stages in order, the containers it made, its place in the step count."""

    def __init__(
        self,
        builder: ImageBuilder,
        spec: ImageBuildSpec,
        context: BuildContext,
        dockerfile: Dockerfile,
        output: OutputSink,
        stop: threading.Event,
    ) -> None:
        self.builder, self.client = builder, builder.client
        self.spec, self.context, self.dockerfile = spec, context, dockerfile
        self.output, self.stop = output, stop
        self.containers: list[Container] = []
        self.built: dict[int, tuple[str, StageState]] = {}
        self.used: set[str] = set()
        self.step, self.steps = 0, 0

    def run(self) -> str:
        outer: dict[str, str] = {}
        try:
            stages = stages_needed(self.dockerfile, self.spec.target)
        except DockerfileError as exc:
            raise BuildFailed(str(exc)) from None
        self.steps = len(self.dockerfile.global_args) + sum(1 + len(s.instructions) for s in stages)
        for instruction in self.dockerfile.global_args:
            self._say(instruction)
            state = StageState({}, self.dockerfile.escape)
            state.args = dict(outer)
            self.used.update(state.declare(instruction, self.spec.build_args, outer))
            outer = state.args
        image, state = "", StageState({}, self.dockerfile.escape)
        for stage in stages:
            image, state = self._stage(stage, outer)
            self.built[stage.index] = (image, state)
        unused = sorted(set(self.spec.build_args) - self.used)
        if unused:
            self.output(f"[Warning] One or more build-args {unused} were not consumed\n".encode())
        return self._finish(image, state)

    # -- stages and steps -----------------------------------------------------------------------

    def _stage(self, stage: Stage, outer: Mapping[str, str]) -> tuple[str, StageState]:
        self._say(stage.start)
        base = StageState({}, self.dockerfile.escape)
        base.args = dict(outer)
        reference = base.expand(stage.start, stage.base)
        earlier = stage_named([s for s in self.dockerfile.stages if s.index in self.built], reference)
        if earlier is not None:
            image, inherited = self.built[earlier.index]
            config = inherited.config
        elif reference.lower() == "scratch":
            image, config = self.builder.scratch(), {}
        else:
            image, config = self.builder.image_config(reference)
            if config.get("OnBuild"):
                raise BuildFailed(
                    f"Dockerfile:{stage.start.line}: the base image {reference} has ONBUILD triggers, "
                    "which this builder does not run"
                )
        self.output(f" ---> {_short(image)}\n".encode())
        state = StageState(config, self.dockerfile.escape)
        for instruction in stage.instructions:
            if self.stop.is_set():
                raise ExecutorError("build stopped")
            self._say(instruction)
            try:
                image = self._instruction(image, state, instruction, outer)
            except DockerfileError as exc:
                raise BuildFailed(str(exc)) from None
        return image, state

    def _instruction(
        self, image: str, state: StageState, instruction: Instruction, outer: Mapping[str, str]
    ) -> str:
        keyword = instruction.keyword
        if keyword == "ARG":
            self.used.update(state.declare(instruction, self.spec.build_args, outer))
        elif keyword == "RUN":
            return self._run(image, state, instruction)
        elif keyword in ("COPY", "ADD"):
            return self._copy(image, state, instruction)
        elif keyword == "WORKDIR":
            state.apply(instruction)
            return self._make_workdir(image, state)
        else:
            state.apply(instruction)
        return image

    def _run(self, image: str, state: StageState, instruction: Instruction) -> str:
        argv, extra = state.run_command(instruction, self.spec.build_args)
        env = {**state.env(), **extra}
        key = _key(image, "RUN", argv, sorted(env.items()), state.user, state.workdir, self.spec.network)
        cached = self._cached(key)
        if cached:
            return cached
        container = self._create(
            image,
            entrypoint=argv,
            environment=env,
            user=state.user or None,
            working_dir=state.config.get("WorkingDir") or None,
            network_mode="none" if self.spec.network == "none" else None,
        )
        self.output(f" ---> Running in {container.id[:12]}\n".encode())
        try:
            code = follow(container, self.output, self._watch())
        except APIError as exc:
            raise BuildFailed(f"RUN failed to start: {_explain(exc)}") from None
        if self.stop.is_set():
            raise ExecutorError("build stopped")
        if code != 0:
            shown = (
                " ".join([*argv[:-1], instruction.args])
                if instruction.exec_form is None
                else json.dumps(argv)
            )
            raise BuildFailed(f"The command '{shown}' returned a non-zero code: {code}")
        return self._commit(container, state, key)

    def _copy(self, image: str, state: StageState, instruction: Instruction) -> str:
        words = (
            list(instruction.exec_form)
            if instruction.exec_form is not None
            else [state.expand(instruction, word) for word in instruction.args.split()]
        )
        if len(words) < 2:
            raise instruction.error("needs a source and a destination")
        sources, dest = words[:-1], words[-1]
        if instruction.keyword == "ADD" and any(_URL.match(source) for source in sources):
            raise instruction.error(
                "ADD of a URL is not supported by this builder: download it in a RUN step"
            )
        many = len(sources) > 1 or any(re.search(r"[*?\[]", source) for source in sources)
        if many and not dest.endswith("/"):
            raise instruction.error(
                "with more than one source file, the destination must be a directory and end with a /"
            )
        absolute = posixpath.join(state.workdir, dest)
        target = posixpath.normpath(absolute) + ("/" if dest.endswith("/") and absolute != "/" else "")
        container = self._create(image, entrypoint=NEVER_RUN, network_mode="none")
        exists: Exists = lambda path: self._stat(container, path)  # noqa: E731
        owner = (
            self._owner(container, instruction, state.expand(instruction, instruction.flags["chown"]))
            if "chown" in instruction.flags
            else None
        )
        packed = self._pack(instruction, state, sources, target, owner, exists)
        with packed.file:
            key = _key(image, instruction.keyword, packed.digest, target, owner)
            cached = self._cached(key)
            if cached:
                self._remove(container)
                return cached
            if packed.entries:
                try:
                    container.put_archive("/", packed.file)
                except APIError as exc:
                    raise BuildFailed(f"{instruction.keyword} failed: {_explain(exc)}") from None
        return self._commit(container, state, key)

    def _pack(
        self,
        instruction: Instruction,
        state: StageState,
        sources: list[str],
        target: str,
        owner: Owner | None,
        exists: Exists,
    ) -> Packed:
        if "from" in instruction.flags:
            reference = state.expand(instruction, instruction.flags["from"])
            earlier = stage_named([s for s in self.dockerfile.stages if s.index in self.built], reference)
            source_image = (
                self.built[earlier.index][0] if earlier else self.builder.image_config(reference)[0]
            )
            source = self._create(source_image, entrypoint=NEVER_RUN, network_mode="none")
            try:
                return pack_from_image(
                    lambda path: self._archive(source, path), sources, target, owner, exists
                )
            finally:
                self._remove(source)
        if instruction.keyword == "ADD" and len(sources) == 1:
            archive = self.context.pack_archive(self.context.matches(sources[0])[0], target, owner, exists)
            if archive is not None:
                return archive
        matched = [path for source in sources for path in self.context.matches(source)]
        if len(matched) > 1 and not target.endswith("/"):
            target += "/"
        return self.context.pack(matched, target, owner, exists)

    def _make_workdir(self, image: str, state: StageState) -> str:
        """WORKDIR makes its directory when the image lacks it, as the classic builder does."""
        path = state.workdir
        key = _key(image, "WORKDIR", path)
        cached = self._cached(key)
        if cached:
            return cached
        container = self._create(image, entrypoint=NEVER_RUN, network_mode="none")
        if self._stat(container, path) == "dir":
            self._remove(container)
            return image
        packed = pack_directories(path, lambda p: self._stat(container, p))
        with packed.file:
            container.put_archive("/", packed.file)
        return self._commit(container, state, key)

    def _finish(self, image: str, state: StageState) -> str:
        """The last stage's layers with exactly its configuration and the image's own labels. A step's
        commit takes its container's configuration (its command, the job's labels, ARGs of an
        exec-form RUN), so the final one is written whole, as a configuration-only image load."""
        config = {key: copy.deepcopy(state.config[key]) for key in CONFIG_KEYS if state.config.get(key)}
        config["Labels"] = {**(config.get("Labels") or {}), **self.spec.image_labels}
        attrs = self.client.api.inspect_image(image)
        current = attrs.get("Config") or {}
        if all((current.get(key) or None) == (config.get(key) or None) for key in CONFIG_KEYS):
            return image
        return _with_config(self.client, attrs, config)

    # -- the engine -----------------------------------------------------------------------------

    def _say(self, instruction: Instruction) -> None:
        self.step += 1
        self.output(f"Step {self.step}/{self.steps} : {instruction.text}\n".encode())

    def _watch(self) -> threading.Event:
        """The step's stop: set when the build's is (the step's own is set by `follow` at its end)."""
        step = threading.Event()

        def relay() -> None:
            while not step.is_set():
                if self.stop.wait(0.2):
                    step.set()

        threading.Thread(target=relay, daemon=True).start()
        return step

    def _create(self, image: str, **config: Any) -> Container:
        try:
            container = self.client.containers.create(
                image,
                command=[],
                labels=dict(self.spec.labels),
                detach=True,
                # No init: its binary is mounted into the container, and would be committed with it.
                **hardening(JOB_CAPABILITIES, self.spec.limits, init=False),
                **config,
            )
        except APIError as exc:
            raise ExecutorError(f"the Docker Engine refused a build step: {_explain(exc)}") from None
        self.containers.append(container)
        return container

    def _commit(self, container: Container, state: StageState, key: str | None) -> str:
        image = self.client.api.commit(container.id)["Id"]
        self._remove(container)
        self.output(f" ---> {_short(image)}\n".encode())
        if key is not None:
            self._store(key, image)
        return image

    def _remove(self, container: Container) -> None:
        with contextlib.suppress(NotFound):
            container.remove(force=True, v=True)
        with contextlib.suppress(ValueError):
            self.containers.remove(container)

    def remove_containers(self) -> None:
        """Every step container still there (a failed or stopped build): none may stay behind."""
        for container in list(self.containers):
            with contextlib.suppress(*ENGINE_UNREACHABLE):
                self._remove(container)

    def _stat(self, container: Container, path: str) -> str | None:
        """ "dir", "file" or None: what `path` is in the container's filesystem (links followed)."""
        for _ in range(40):
            url = self.client.api._url("/containers/{0}/archive", container.id)
            response = self.client.api.head(url, params={"path": path})
            if response.status_code == 404:
                return None
            self.client.api._raise_for_status(response)
            found = json.loads(base64.b64decode(response.headers["X-Docker-Container-Path-Stat"]))
            if not found["mode"] & _GO_LINK or not found.get("linkTarget"):
                return "dir" if found["mode"] & _GO_DIR else "file"
            path = found["linkTarget"]
        raise BuildFailed(f"too many levels of links at {path} in the image")

    def _archive(self, container: Container, path: str) -> Iterator[bytes] | None:
        try:
            stream, _ = container.get_archive(path)
        except NotFound:
            return None
        return stream

    def _owner(self, container: Container, instruction: Instruction, chown: str) -> Owner:
        """--chown=USER[:GROUP], by number or by name in the image's /etc/passwd and /etc/group."""
        user, _, group = chown.partition(":")
        uid = int(user) if user.isdigit() else self._lookup(container, instruction, "/etc/passwd", user, 2)
        if not group:
            gid = uid if user.isdigit() else self._lookup(container, instruction, "/etc/passwd", user, 3)
        else:
            gid = (
                int(group)
                if group.isdigit()
                else self._lookup(container, instruction, "/etc/group", group, 2)
            )
        return uid, gid

    def _lookup(
        self, container: Container, instruction: Instruction, file: str, name: str, field: int
    ) -> int:
        stream = self._archive(container, file)
        text = _single_file(stream) if stream is not None else ""
        for line in text.splitlines():
            parts = line.split(":")
            if len(parts) > field and parts[0] == name and parts[field].isdigit():
                return int(parts[field])
        raise instruction.error(f"--chown: no {name!r} in the image's {file}")

    def _cached(self, key: str) -> str | None:
        cache = self.spec.cache
        for folder in cache.read if cache else ():
            with contextlib.suppress(OSError):
                image = (folder / key).read_text().strip()
                with contextlib.suppress(ImageNotFound):
                    self.client.api.inspect_image(image)
                    self.output(f" ---> Using cache\n ---> {_short(image)}\n".encode())
                    return image
        return None

    def _store(self, key: str, image: str) -> None:
        folder = self.spec.cache.write if self.spec.cache else None
        if folder is None:
            return
        with contextlib.suppress(OSError):
            folder.mkdir(parents=True, exist_ok=True)
            fd, temporary = tempfile.mkstemp(dir=folder, suffix=".tmp")
            with os.fdopen(fd, "w") as out:
                out.write(image)
            os.replace(temporary, folder / key)


def _key(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def _short(image: str) -> str:
    return image.removeprefix("sha256:")[:12]


def _explain(exc: BaseException) -> str:
    return str(getattr(exc, "explanation", None) or exc)


def _single_file(stream: Iterator[bytes]) -> str:
    with tempfile.SpooledTemporaryFile() as data:
        for chunk in stream:
            data.write(chunk)
        data.seek(0)
        with tarfile.open(fileobj=data) as tar:
            member = next((m for m in tar if m.isfile()), None)
            found = tar.extractfile(member) if member else None
            return found.read(1024 * 1024).decode(errors="replace") if found else ""


def _with_config(client: docker.DockerClient, image: Mapping[str, Any], config: Mapping[str, Any]) -> str:
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
            f"the Docker Engine did not take the image's configuration: {_explain(exc)}"
        ) from None
    return f"sha256:{digest}"
