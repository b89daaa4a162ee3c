"""Request and response bodies: the OpenAPI schema at /docs is built from these."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from ciserver.api.status_schemas import StatusOut
from ciserver.job_variables import image_ran
from ciserver.pipeline.fields import Patterns
from ciserver.states import DeploymentStatus
from ciserver.store.clone_credentials import shown_repo_url
from ciserver.store.models import Artifact, AuditEntry, Build, Deployment, Job, Project, Release, Token
from ciserver.store.projects import MIN_WEBHOOK_SECRET, webhook_path


class ProjectIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="The forge's repository path, OWNER/NAME (GitLab: GROUP/SUBGROUP/NAME).")
    repo: str = Field(description="Where workers clone from: an https or ssh URL.")
    forge: str = Field(description="github, gitlab or gitea (Gitea and Forgejo)")
    secret: str = Field(
        min_length=MIN_WEBHOOK_SECRET,
        description="The webhook secret (GitHub, Gitea) or secret token (GitLab), at least 16 characters.",
    )
    auto_cancel: bool | None = Field(
        None,
        description="Cancel a branch's older unfinished builds on a new push; "
        "unset: on for every branch but the default one.",
    )


class ProjectOut(BaseModel):
    name: str
    forge: str
    repo: str = Field(description="The clone URL, credentials hidden.")
    webhook_path: str = Field(description="Point the forge's webhook at this path on the server.")
    auto_cancel: bool | None = Field(description="The setting; null: the default (auto_cancel_effective).")
    auto_cancel_effective: str = Field(
        description="Which branches a new push cancels older unfinished builds of: 'every branch but "
        "the default one' (the default), 'every branch' or 'no branch'."
    )
    forge_api_url: str | None = Field(
        description="Where commit statuses go; null: the forge's public API (GitHub, GitLab)."
    )
    forge_token_set: bool = Field(
        description="Whether a forge API token is set (it never leaves the server): statuses are "
        "reported only with one."
    )
    created_at: datetime

    @classmethod
    def of(cls, project: Project) -> ProjectOut:
        return cls(
            name=project.name,
            forge=project.forge,
            repo=shown_repo_url(project),
            webhook_path=webhook_path(project),
            auto_cancel=project.auto_cancel,
            auto_cancel_effective=_AUTO_CANCEL_MEANS[project.auto_cancel],
            forge_api_url=project.forge_api_url,
            forge_token_set=project.forge_token is not None,
            created_at=project.created_at,
        )


_AUTO_CANCEL_MEANS = {None: "every branch but the default one", True: "every branch", False: "no branch"}


class ProjectUpdate(BaseModel):
    """What PATCH /projects/{name} changes: only the fields given; null clears the forge URL and token."""

    model_config = ConfigDict(extra="forbid")

    secret: str | None = Field(
        None, min_length=MIN_WEBHOOK_SECRET, description="A new webhook secret, at least 16 characters."
    )
    rotate_secret: bool = Field(
        False, description="Make a new random webhook secret, returned once in `secret` of the answer."
    )
    repo: str | None = Field(None, description="A new clone URL, checked as on registration.")
    forge_url: str | None = Field(
        None, description="The forge's API base URL (https://gitea.example/api/v1); null: the public one."
    )
    forge_token: str | None = Field(
        None, description="A token allowed to set commit statuses; null: none (statuses stop)."
    )
    auto_cancel: bool | None = Field(None, description="As on registration; null: the default.")


class ProjectUpdated(ProjectOut):
    secret: str | None = Field(None, description="The new webhook secret, only when rotate_secret made it.")


class JobOut(BaseModel):
    id: int
    name: str
    stage: str
    image: str = Field(
        description="The image the job runs, as the worker names it to the engine: the file's `image` "
        "with the job's variables expanded (secrets never: a name made of one is shown as written)."
    )
    image_declared: str = Field("", description="`image` as the pipeline file wrote it, e.g. $IMAGE.")
    status: str
    when: str = Field(
        description="on_success, on_failure, always or manual (a waiting manual job is skipped)."
    )
    allow_failure: bool = Field(description="A failure of this job leaves the build green.")
    after: list[str] = Field(
        description="The jobs that end before this one starts: its needs, or earlier stages."
    )
    attempt: int = Field(description="1, or more once its retry policy ran it again.")
    exit_code: int | None
    error: str | None
    image_tag: str | None = Field(
        None, description="An image_build job's image, tagged ciserver/OWNER-NAME:SHA."
    )
    image_id: str | None = None
    image_digest: str | None = None
    started_at: datetime | None
    finished_at: datetime | None

    @classmethod
    def of(cls, job: Job, registry: str | None = None) -> JobOut:
        """`registry`: the server's CISERVER_REGISTRY, which names the release image jobs pull."""
        out = cls.model_validate(job, from_attributes=True)
        return out.model_copy(update={"image": image_ran(job, registry), "image_declared": job.image})


class BuildOut(BaseModel):
    id: int
    project: str
    ref: str
    branch: str | None
    tag: str | None
    sha: str
    message: str
    author: str
    status: str
    error: str | None = Field(description="Why the build is error, failed or skipped.")
    retry_of: int | None
    source: str = Field(
        description="What started it (its jobs' CI_PIPELINE_SOURCE): push, pull_request, manual, schedule."
    )
    variables: dict[str, str] = Field(
        default_factory=dict, description="The variables a manual run or a schedule gave its jobs."
    )
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None

    @classmethod
    def fields_of(cls, build: Build) -> dict[str, object]:
        return {
            "id": build.id,
            "project": build.project.name,
            "ref": build.ref,
            "branch": build.branch,
            "tag": build.tag,
            "sha": build.sha,
            "message": build.message,
            "author": build.author,
            "status": build.status,
            "error": build.error,
            "retry_of": build.retry_of,
            "source": build.source,
            "variables": build.variables or {},
            "created_at": build.created_at,
            "started_at": build.started_at,
            "finished_at": build.finished_at,
        }

    @classmethod
    def of(cls, build: Build) -> BuildOut:
        return cls(**cls.fields_of(build))  # type: ignore[arg-type]


class BuildDetail(BuildOut):
    jobs: list[JobOut]
    statuses: list[StatusOut] = Field(
        default_factory=list, description="Its commit statuses on the forge (a project with a forge token)."
    )

    @classmethod
    def of(cls, build: Build, registry: str | None = None) -> BuildDetail:
        return cls(
            **cls.fields_of(build),  # type: ignore[arg-type]
            jobs=[JobOut.of(job, registry) for job in build.jobs],
            statuses=[StatusOut.of(status) for status in build.statuses],
        )


class BuildList(BaseModel):
    items: list[BuildOut]
    total: int


class BuildCreated(BaseModel):
    build_id: int


class TokenIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: Literal["viewer", "developer", "ops", "admin"]
    name: str = Field("", max_length=255)
    expires_in: int | str | None = Field(
        None,
        description="How long the token works: 30d, 12h, 90m or seconds, at most 3650d; "
        "unset: until revoked.",
    )


class TokenCreated(BaseModel):
    id: int
    role: str
    token: str = Field(description="Shown once; only its hash is kept.")
    expires_at: datetime | None


class TokenOut(BaseModel):
    id: int
    name: str
    role: str
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None

    @classmethod
    def of(cls, token: Token) -> TokenOut:
        return cls.model_validate(token, from_attributes=True)


class WebhookAnswer(BaseModel):
    """What a forge gets back; shown in its delivery log, so it says what happened."""

    build_id: int | None = None
    duplicate: bool | None = Field(None, description="true when this delivery id was already received")
    message: str


class ArtifactOut(BaseModel):
    id: int
    job_id: int
    path: str = Field(description="Where the file was in the job's workspace.")
    size: int
    sha256: str
    expires_at: datetime | None
    download: str = Field(description="GET this path for the file's bytes.")

    @classmethod
    def of(cls, artifact: Artifact) -> ArtifactOut:
        return cls(
            id=artifact.id,
            job_id=artifact.job_id,
            path=artifact.path,
            size=artifact.size,
            sha256=artifact.sha256,
            expires_at=artifact.expires_at,
            download=f"/api/v1/artifacts/{artifact.id}",
        )


class ReleaseOut(BaseModel):
    id: int
    build_id: int
    sha: str
    branch: str | None
    tag: str | None
    image: str | None = Field(description="The tag its image_build job gave the image.")
    image_id: str | None
    image_digest: str | None
    environments: list[str] = Field(description="The environments of its pipeline it may be deployed to.")
    refused: dict[str, str] = Field(
        description="The environments of its pipeline it may not go to, each with why "
        "(the server's rules, or a listen or strategy only the default branch may change)."
    )
    artifacts: list[ArtifactOut] = Field(description="The files its build kept.")
    created_at: datetime

    @classmethod
    def of(cls, release: Release, artifacts: list[Artifact]) -> ReleaseOut:
        refused = dict(release.refused or {})
        named = (release.config or {}).get("environments") or {}
        return cls(
            id=release.id,
            build_id=release.build_id,
            sha=release.sha,
            branch=release.branch,
            tag=release.tag,
            image=release.image_tag,
            image_id=release.image_id,
            image_digest=release.image_digest,
            environments=[name for name in named if name not in refused],
            refused=refused,
            artifacts=[ArtifactOut.of(a) for a in artifacts],
            created_at=release.created_at,
        )


class DeploymentOut(BaseModel):
    id: int
    project: str
    environment: str
    release_id: int
    build_id: int
    sha: str
    previous_release_id: int | None
    action: str = Field(
        description="auto, promote or rollback: what started it; stop: ops took the environment down."
    )
    strategy: str
    status: DeploymentStatus
    reason: str | None
    weight: int = Field(description="Percent of the environment's requests the new release gets now.")
    steps: list[dict[str, Any]] = Field(
        description="Each step: weight, started_at, finished_at, requests, errors, error_rate, healthy."
    )
    color: str | None
    address: str | None
    triggered_by: str
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None

    @classmethod
    def of(cls, deployment: Deployment) -> DeploymentOut:
        return cls(
            id=deployment.id,
            project=deployment.project.name,
            environment=deployment.environment.name,
            release_id=deployment.release_id,
            build_id=deployment.release.build_id,
            sha=deployment.release.sha,
            previous_release_id=deployment.previous_release_id,
            action=deployment.action,
            strategy=deployment.strategy,
            status=deployment.status,
            reason=deployment.reason,
            weight=deployment.weight,
            steps=list(deployment.steps or []),
            color=deployment.color,
            address=deployment.address,
            triggered_by=deployment.triggered_by,
            created_at=deployment.created_at,
            started_at=deployment.started_at,
            finished_at=deployment.finished_at,
        )


class ProtectionIn(BaseModel):
    """An environment's rules; those left out stay as they are. Giving `branches` or `tags` replaces
    both (the one left out then takes no ref of its kind); both null: the default branch only."""

    model_config = ConfigDict(extra="forbid")

    branches: Patterns | None = Field(None, description="Globs of the branches whose releases may deploy.")
    tags: Patterns | None = Field(None, description="Globs of the tags whose releases may deploy.")
    require_promote: bool = Field(
        False, description="true: no release deploys by itself (`auto` is ignored); each needs a promote."
    )
    promote_role: Literal["developer", "ops", "admin"] = Field(
        "ops", description="The least role that may promote, roll back, pause, resume and abort here."
    )

    def rules(self) -> dict[str, Any]:
        """The rules given, as store.environments.protect takes them."""
        given = self.model_dump(include=self.model_fields_set)
        if given.keys() & {"branches", "tags"}:
            given = {"branches": self.branches, "tags": self.tags, **given}
        return given


class ProtectionOut(BaseModel):
    """Which refs may deploy to an environment, whether a promote is required, who may promote."""

    branches: list[str] | None = Field(
        description="Branch globs; with tags null too: the default branch only."
    )
    tags: list[str] | None = Field(description="Tag globs.")
    require_promote: bool
    promote_role: str
    set_by: str | None = Field(
        description="Who set these rules: an API token, `cli:USER`, or the build that first declared it; "
        "null: none yet (only the default branch may deploy)."
    )


class EnvironmentOut(BaseModel):
    name: str
    listen: str | None = Field(description="Where nginx serves it.")
    strategy: str | None = Field(
        description="recreate, blue_green or canary, as the default branch declared."
    )
    after: str | None = Field(description="The environment a release must succeed in first.")
    declared_by: str | None = Field(description="The default-branch build that last declared it.")
    protection: ProtectionOut
    release: ReleaseOut | None = Field(description="The release it runs.")
    since: datetime | None = Field(description="When that release went live there.")
    deployed_by: str | None
    latest_deployment: DeploymentOut | None
    stopped_at: datetime | None = Field(
        None, description="When ops stopped it (nothing runs there until a promote or auto deploy)."
    )
    stopped_by: str | None = Field(None, description="Who stopped it.")


class PromoteIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    build_id: int = Field(ge=1, le=2**63 - 1, description="The build whose release to deploy.")


class AuditEntryOut(BaseModel):
    id: int
    at: datetime
    actor: str = Field(description="`token:ID (name)` for the API, `cli:USER` for the CLI on the host.")
    action: str = Field(description="What was done, e.g. token.create, environment.promote.")
    target: str = Field(description="What it was done to, e.g. project:acme/app/environment:production.")
    detail: dict[str, Any] | None

    @classmethod
    def of(cls, entry: AuditEntry) -> AuditEntryOut:
        return cls.model_validate(entry, from_attributes=True)


class AuditList(BaseModel):
    items: list[AuditEntryOut]
    total: int
