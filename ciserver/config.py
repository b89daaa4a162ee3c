"""Settings from CISERVER_* environment variables, one object for every process."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BeforeValidator, Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from ciserver.units import parse_size

Bytes = Annotated[int, BeforeValidator(parse_size)]


class Settings(BaseSettings):
    """Everything an operator can set; the defaults give a working single-host server."""

    model_config = SettingsConfigDict(env_prefix="CISERVER_", extra="ignore")

    data_dir: Path = Field(Path(".ciserver"), description="Database, mirrors, workspaces and logs live here.")
    database_url: str | None = Field(None, description="SQLAlchemy URL; default: SQLite in the data dir.")
    redis_url: str | None = Field(None, description="Shared Redis; unset: `ciserver up` starts its own.")
    allow_local_repos: bool = Field(False, description="Accept file:// and plain paths as clone URLs.")
    max_body_bytes: int = Field(25 * 1024 * 1024, description="Largest webhook body accepted (GitHub's cap).")
    api_max_body_bytes: Bytes = Field(
        1024 * 1024, description="Largest request body the API accepts (webhooks have their own)."
    )
    job_timeout: int = Field(3600, description="Seconds a job may run when its pipeline sets no timeout.")
    job_timeout_max: int = Field(
        6 * 3600,
        gt=0,
        description="Most seconds a job or a deploy script step may ask for (timeout); a build whose "
        "file asks for more ends in error. 6h, GitHub Actions' limit for a job on its own runners.",
    )
    log_stream_ttl: int = Field(3600, description="Seconds a finished job's live stream stays in Redis.")
    pull_images: bool = Field(True, description="Pull a job's image when the engine does not have it.")
    outbox_interval: float = Field(2.0, description="Seconds between scans for builds not yet enqueued.")
    event_retention: int = Field(
        7 * 86400,
        gt=0,
        description="Seconds the build, job and deployment events stay (7 days): how far back a client of "
        "GET /api/v1/events can resume.",
    )
    public_url: str = Field(
        "http://127.0.0.1:8080",
        description="The server's address as people reach it: commit statuses link to "
        "PUBLIC_URL/builds/ID on it.",
    )
    status_interval: float = Field(
        1.0, gt=0, description="Seconds between passes of the commit status reporter (API process)."
    )
    status_attempts: int = Field(
        8, ge=1, description="Sends of one commit status before it is given up (the reason is shown)."
    )
    status_backoff: float = Field(
        5.0, ge=0, description="Seconds before a failed commit status is sent again, doubled each time."
    )
    status_timeout: float = Field(10.0, gt=0, description="Seconds a forge's API has to answer a status.")
    stop_grace: float = Field(
        10.0,
        ge=0,
        description="Seconds a worker told to stop (SIGTERM) lets its current job run on before it "
        "stops the job and hands it back to the queue for another worker.",
    )
    worker_ttl: int = Field(
        20,
        ge=3,
        description="Seconds a worker stays registered without a heartbeat (it sends one every third "
        "of this); a worker silent longer is lost, and its jobs are ended or retried.",
    )
    project_concurrency: int = Field(
        0, ge=0, description="Jobs of one project that may run at once; 0: as many as there are workers."
    )
    job_memory: Bytes = Field(2 * 1024**3, description="Memory of a job's container unless it asks less.")
    job_memory_max: Bytes = Field(
        8 * 1024**3, description="Most memory a job may ask for (resources.memory)."
    )
    job_cpus: float = Field(2.0, gt=0, description="CPUs a job's container may use unless it asks less.")
    job_cpus_max: float = Field(4.0, gt=0, description="Most CPUs a job may ask for (resources.cpus).")
    job_pids: int = Field(1024, gt=0, description="Processes a job's container may hold at once.")
    job_pids_max: int = Field(8192, gt=0, description="Most processes a job may ask for (resources.pids).")
    job_user: str | None = Field(
        None, description="User jobs run as unless they name one; default the image's."
    )
    secret_key: str | None = Field(
        None,
        description="Fernet key that encrypts secrets at rest; unset: kept in the data dir's secret.key.",
    )
    admin_token: str | None = Field(
        None,
        description="A first admin token, chosen by the operator (at least 32 characters): `serve` "
        "records its hash at start while the database has no admin token at all (docker-compose's "
        "first token, from .env); unset, make one with `ciserver token create --role admin`.",
    )
    router_reload: str | None = Field(
        None,
        description="Command that reloads the nginx routing deployments; unset: `ciserver up` starts "
        "its own nginx and sets this, elsewhere `nginx -s reload`.",
    )
    router_test: str | None = Field(
        None,
        description="Command that tests nginx's configuration before each reload; unset: the reload "
        "command with `-s reload` made `-t -q` (no test when the reload command has no `-s reload`).",
    )
    artifact_max_bytes: Bytes = Field(
        1024**3, description="Largest total size of the artifacts one job may keep."
    )
    cache_max_bytes: Bytes = Field(2 * 1024**3, description="Largest size of one saved cache.")
    log_max_bytes: Bytes = Field(
        16 * 1024**2,
        ge=4096,
        description="Most output one job attempt keeps in its log: past it, the first and last halves "
        "are kept with a line saying how much was cut between them.",
    )

    blob_store: Literal["files", "database"] = Field(
        "files",
        description="Where job logs at rest, artifacts and caches are kept: `files` in the data dir "
        "(every worker shares it: one host), `database` in the database every host reaches (workers "
        "on other hosts, sharing no filesystem).",
    )
    registry: str | None = Field(
        None,
        description="HOST:PORT of a Docker registry: image builds push their release images there and "
        "every worker and deploy worker pulls them from it; unset: an image stays on the engine that "
        "built it (one host).",
    )
    log_format: Literal["text", "json"] = Field(
        "text",
        description="How `serve`, `worker` and `up`'s children write their process logs: `text` for "
        "people, `json` for one object a line (time, level, logger, message, and the build, job, "
        "deployment and request ids when known) for a log shipper.",
    )
    metrics_public: bool = Field(
        False,
        description="Serve /metrics without a token; unset, a scrape needs a viewer token (Prometheus: "
        "`authorization: {credentials: ...}`).",
    )

    @field_validator("data_dir")
    @classmethod
    def _absolute(cls, value: Path) -> Path:
        # Workspaces are bind-mounted into containers, and the engine needs absolute paths.
        return value.expanduser().resolve()

    @property
    def db_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / 'ciserver.db'}"

    @property
    def mirrors_dir(self) -> Path:
        return self.data_dir / "mirrors"

    @property
    def workspaces_dir(self) -> Path:
        return self.data_dir / "workspaces"

    @property
    def logs_dir(self) -> Path:
        """Job logs at rest (the `files` blob store): one file per job attempt."""
        return self.data_dir / "logs"

    @property
    def process_logs_dir(self) -> Path:
        """What `up`'s own processes (API, workers, Redis, nginx) print: not job logs (logs_dir)."""
        return self.data_dir / "process-logs"

    @property
    def artifacts_dir(self) -> Path:
        return self.data_dir / "artifacts"

    @property
    def cache_dir(self) -> Path:
        return self.data_dir / "cache"

    @property
    def router_dir(self) -> Path:
        """nginx.conf, one file per environment, and the access logs the canary analysis reads."""
        return self.data_dir / "nginx"

    @property
    def secret_key_file(self) -> Path:
        return self.data_dir / "secret.key"


@lru_cache
def get_settings() -> Settings:
    """The process's settings, read once from the environment."""
    return Settings()
