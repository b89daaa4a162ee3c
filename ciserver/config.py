"""Settings from CISERVER_* environment variables, one object for every process."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Everything an operator can set; the defaults give a working single-host server."""

    model_config = SettingsConfigDict(env_prefix="CISERVER_", extra="ignore")

    data_dir: Path = Field(Path(".ciserver"), description="Database, mirrors, workspaces and logs live here.")
    database_url: str | None = Field(None, description="SQLAlchemy URL; default: SQLite in the data dir.")
    redis_url: str | None = Field(None, description="Shared Redis; unset: `ciserver up` starts its own.")
    allow_local_repos: bool = Field(False, description="Accept file:// and plain paths as clone URLs.")
    max_body_bytes: int = Field(25 * 1024 * 1024, description="Largest webhook body accepted (GitHub's cap).")
    job_timeout: int = Field(3600, description="Seconds a job may run when its pipeline sets no timeout.")
    log_stream_ttl: int = Field(3600, description="Seconds a finished job's live stream stays in Redis.")
    pull_images: bool = Field(True, description="Pull a job's image when the engine does not have it.")
    outbox_interval: float = Field(2.0, description="Seconds between scans for builds not yet enqueued.")
    stop_grace: float = Field(
        10.0, description="Seconds `ciserver up` lets workers finish before stopping them."
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
        return self.data_dir / "logs"


@lru_cache
def get_settings() -> Settings:
    """The process's settings, read once from the environment."""
    return Settings()
