"""From a job row and its options to what an executor runs: the image with its variables expanded
(as ciserver.job_variables defines them), the container limits within the server's maximum, the
services, the image build."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from ciserver.config import Settings
from ciserver.job_variables import expand, release_image
from ciserver.pipeline import ImageBuild, JobOptions, Resources, Service
from ciserver.store.models import Build, Job
from workers.cache import ref_folder
from workers.executors.base import BuildCache, ImageBuildSpec, JobSpec, Limits, ServiceSpec


class SpecError(Exception):
    """The job asks for what the server does not give (limits over the maximum, a secret in a build
    arg); the job ends in error with this message."""


def limits_for(resources: Resources, settings: Settings) -> Limits:
    """The job's resources, defaulting to the server's; asking over the server maximum is an error."""
    checks = (
        ("memory", resources.memory, settings.job_memory, settings.job_memory_max),
        ("cpus", resources.cpus, settings.job_cpus, settings.job_cpus_max),
        ("pids", resources.pids, settings.job_pids, settings.job_pids_max),
    )
    values: dict[str, float] = {}
    for key, value, default, maximum in checks:
        if value is not None and value > maximum:
            raise SpecError(f"resources.{key}: {value} is over this server's maximum of {maximum}")
        values[key] = value if value is not None else min(default, maximum)
    return Limits(memory=int(values["memory"]), cpus=float(values["cpus"]), pids=int(values["pids"]))


def services_for(services: Sequence[Service], variables: Mapping[str, str]) -> tuple[ServiceSpec, ...]:
    return tuple(
        ServiceSpec(
            image=expand(service.image, variables),
            alias=str(service.alias),  # the model sets it from the image when the file does not
            env=dict(service.env),
            command=tuple(service.command) if service.command else None,
        )
        for service in services
    )


def spec_for(
    job: Job,
    options: JobOptions,
    env: Mapping[str, str],
    secrets: Mapping[str, str],
    workspace: Path,
    labels: Mapping[str, str],
    settings: Settings,
) -> JobSpec | ImageBuildSpec:
    """What the executor runs for this job: its image build, or else its script's container. An
    image build's context and Dockerfile are resolved only once the workspace is checked out (links
    in the checkout decide where they lead), by the builder."""
    image_build, build = options.image_build, job.build
    # The registry's name of the release image whoever made `env` (made without the settings, it
    # names the engine's local tag, which an engine on another host does not have).
    env = {**env, "CI_RELEASE_IMAGE": release_image(build, settings.registry)}
    if image_build is not None:
        return ImageBuildSpec(
            job_id=job.id,
            workspace=workspace,
            context=image_build.context,
            dockerfile=image_build.dockerfile,
            tag=env["CI_RELEASE_IMAGE"],
            registry=settings.registry,
            target=image_build.target,
            build_args=_build_args(image_build, env, secrets),
            labels=dict(labels),
            image_labels={
                "ciserver.project": build.project.name,
                "ciserver.build": str(build.id),
                "org.opencontainers.image.revision": build.sha,
            },
            limits=limits_for(options.resources, settings),
            network=options.network,
            cache=build_cache(settings, build),
        )
    return JobSpec(
        job_id=job.id,
        name=job.name,
        image=expand(job.image, env),
        script=tuple(job.script),
        env=dict(env),
        workspace=workspace,
        labels=dict(labels),
        services=services_for(options.services, env),
        limits=limits_for(options.resources, settings),
        user=options.user or settings.job_user,
        network=options.network,
    )


def _build_args(
    image_build: ImageBuild, env: Mapping[str, str], secrets: Mapping[str, str]
) -> dict[str, str]:
    """The build args with variables expanded; none may hold a secret's value."""
    build_args = {name: expand(value, env) for name, value in image_build.build_args.items()}
    for name, value in build_args.items():
        used = sorted(secret for secret, text in secrets.items() if text and text in value)
        if used:
            raise SpecError(
                f"image_build.build_args.{name}: holds the value of secret {used[0]}; a build arg "
                "stays in the image for anyone who pulls it, so secrets are refused there"
            )
    return build_args


def build_cache(settings: Settings, build: Build) -> BuildCache:
    """The ref's folder of image build steps, read before the default branch's (never written by
    another ref), as the cache of files is kept (workers.cache)."""
    root = settings.data_dir / "build-cache" / str(build.project_id)
    own = root / ref_folder(build.ref)
    fallback = root / ref_folder(f"refs/heads/{build.default_branch or 'main'}")
    return BuildCache(read=(own,) if fallback == own else (own, fallback), write=own)


def numeric_owner(user: str | None) -> tuple[int, int] | None:
    """uid and gid of a `user: "1000:1000"` (gid defaults to uid); None for a name or no user, whose
    ids only the image knows."""
    if not user:
        return None
    uid, _, gid = user.partition(":")
    if not uid.isdigit() or (gid and not gid.isdigit()):
        return None
    return int(uid), int(gid or uid)
