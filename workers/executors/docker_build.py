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

import contextlib
import copy
import json
import posixpath
import re
import threading
from collections.abc import Mapping
from typing import Any

import docker
from docker.errors import APIError, NotFound
from docker.models.containers import Container

from workers.executors.base import BuildFailed, BuiltImage, ExecutorError, ImageBuildSpec, OutputSink
from workers.executors.build_cache import StepCache, step_key
from workers.executors.build_context import (
    BuildContext,
    Exists,
    Owner,
    Packed,
    pack_directories,
    pack_from_image,
)
from workers.executors.docker_run import (
    JOB_CAPABILITIES,
    PROJECT_LABEL,
    check_image_owner,
    follow,
    hardening,
)
from workers.executors.dockerfile import (
    Dockerfile,
    DockerfileError,
    Instruction,
    Stage,
    parse_dockerfile,
    stage_named,
    stages_needed,
)
from workers.executors.engine_errors import ENGINE_UNREACHABLE, explain
from workers.executors.image_config import StageState
from workers.executors.image_store import (
    built_image,
    image_config,
    owner_ids,
    path_kind,
    read_archive,
    scratch_image,
    with_config,
)

NEVER_RUN = ["/.ciserver-step-never-runs"]  # the command of a step container that is only written to
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
            raise ExecutorError(f"the Docker Engine failed the build: {explain(exc)}") from None
        finally:
            build.remove_containers()
        output(f"Successfully built {_short(image_id)}\nSuccessfully tagged {spec.tag}\n".encode())
        return built_image(self.client, spec.tag, image_id)


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
        self.client, self.pull = builder.client, builder.pull
        self.cache = StepCache(builder.client, spec.cache)
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
        earlier = self._built_stage(reference)
        if earlier is not None:
            image, config = earlier[0], earlier[1].config
        elif reference.lower() == "scratch":
            image, config = scratch_image(self.client), {}
        else:
            image, config = self._external(reference, stage.start)
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

    def _built_stage(self, reference: str) -> tuple[str, StageState] | None:
        """The image and state of the earlier stage `reference` names, or None for an image."""
        stage = stage_named([s for s in self.dockerfile.stages if s.index in self.built], reference)
        return self.built[stage.index] if stage is not None else None

    def _external(self, reference: str, instruction: Instruction) -> tuple[str, dict[str, Any]]:
        """An image the Dockerfile names that no stage of it made: pulled when allowed, and refused
        when another project's build made it."""
        image, config = image_config(self.client, reference, pull=self.pull)
        project = self.spec.labels.get(PROJECT_LABEL)
        try:
            check_image_owner(reference, config.get("Labels"), project)
        except ExecutorError as exc:
            raise BuildFailed(f"Dockerfile:{instruction.line}: {exc}") from None
        return image, config

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
        key = step_key(image, "RUN", argv, sorted(env.items()), state.user, state.workdir, self.spec.network)
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
            code = follow(container, self.output, self.stop)
        except APIError as exc:
            raise BuildFailed(f"RUN failed to start: {explain(exc)}") from None
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
        exists: Exists = lambda path: path_kind(self.client, container, path)  # noqa: E731
        owner = self._owner(container, state, instruction) if "chown" in instruction.flags else None
        packed = self._pack(instruction, state, sources, target, owner, exists)
        with packed.file:
            key = step_key(image, instruction.keyword, packed.digest, target, owner)
            cached = self._cached(key)
            if cached:
                self._remove(container)
                return cached
            if packed.entries:
                try:
                    container.put_archive("/", packed.file)
                except APIError as exc:
                    raise BuildFailed(f"{instruction.keyword} failed: {explain(exc)}") from None
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
            earlier = self._built_stage(reference)
            source_image = earlier[0] if earlier else self._external(reference, instruction)[0]
            source = self._create(source_image, entrypoint=NEVER_RUN, network_mode="none")
            try:
                return pack_from_image(
                    lambda path: read_archive(source, path), sources, target, owner, exists
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
        key = step_key(image, "WORKDIR", path)
        cached = self._cached(key)
        if cached:
            return cached
        container = self._create(image, entrypoint=NEVER_RUN, network_mode="none")
        if path_kind(self.client, container, path) == "dir":
            self._remove(container)
            return image
        packed = pack_directories(path, lambda p: path_kind(self.client, container, p))
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
        return with_config(self.client, attrs, config)

    # -- the engine -----------------------------------------------------------------------------

    def _say(self, instruction: Instruction) -> None:
        self.step += 1
        self.output(f"Step {self.step}/{self.steps} : {instruction.text}\n".encode())

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
            raise ExecutorError(f"the Docker Engine refused a build step: {explain(exc)}") from None
        self.containers.append(container)
        return container

    def _commit(self, container: Container, state: StageState, key: str | None) -> str:
        image = self.client.api.commit(container.id)["Id"]
        self._remove(container)
        self.output(f" ---> {_short(image)}\n".encode())
        if key is not None:
            self.cache.put(key, image)
        return image

    def _remove(self, container: Container) -> None:
        with contextlib.suppress(NotFound):
            container.remove(force=True, v=True)
        with contextlib.suppress(ValueError):
            self.containers.remove(container)

    def _cached(self, key: str) -> str | None:
        image = self.cache.get(key)
        if image is not None:
            self.output(f" ---> Using cache\n ---> {_short(image)}\n".encode())
        return image

    def _owner(self, container: Container, state: StageState, instruction: Instruction) -> Owner:
        try:
            return owner_ids(container, state.expand(instruction, instruction.flags["chown"]))
        except ValueError as exc:
            raise instruction.error(str(exc)) from None

    def remove_containers(self) -> None:
        """Every step container still there (a failed or stopped build): none may stay behind."""
        for container in list(self.containers):
            with contextlib.suppress(*ENGINE_UNREACHABLE):
                self._remove(container)


def _short(image: str) -> str:
    return image.removeprefix("sha256:")[:12]
