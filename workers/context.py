"""What a worker process keeps between jobs: settings, a Redis client, the executor, the log store."""

from __future__ import annotations

import os
import socket
import threading
from dataclasses import dataclass, field
from functools import cached_property, lru_cache

from redis import Redis

from ciserver.config import Settings, get_settings
from ciserver.event_bus import install_publisher
from ciserver.logs import LogStore
from ciserver.storage import BlobStore, artifact_store, cache_store, log_store
from workers.executors.base import Executor


@dataclass
class WorkerContext:
    settings: Settings
    # Set when the worker stops and its task's grace is over: the task hands itself back.
    hand_back: threading.Event = field(default_factory=threading.Event)

    @cached_property
    def redis(self) -> Redis:
        if not self.settings.redis_url:
            raise RuntimeError("CISERVER_REDIS_URL is not set: workers need the server's Redis")
        return Redis.from_url(self.settings.redis_url, socket_connect_timeout=5, health_check_interval=30)

    @cached_property
    def executor(self) -> Executor:
        from workers.executors.docker import DockerExecutor

        return DockerExecutor(pull=self.settings.pull_images)

    @cached_property
    def log_store(self) -> LogStore:
        return log_store(self.settings)

    @cached_property
    def artifact_store(self) -> BlobStore:
        return artifact_store(self.settings)

    @cached_property
    def cache_store(self) -> BlobStore:
        return cache_store(self.settings)

    @cached_property
    def worker_name(self) -> str:
        # The pid keeps names unique: RQ refuses a name a dead worker still holds until its key expires.
        prefix = os.environ.get("CISERVER_WORKER_NAME") or socket.gethostname()
        return f"{prefix}.{os.getpid()}"


@lru_cache(maxsize=1)
def current() -> WorkerContext:
    settings = get_settings()
    install_publisher(settings.redis_url)  # the builds, jobs and deployments it changes wake the streams
    return WorkerContext(settings)
