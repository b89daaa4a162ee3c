"""The event stream's machinery, in one real uvicorn server in this process so that its hub can be
looked at: one Redis subscription wakes every client, clients that go away leave nothing running, and
an idle stream says it is alive."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import uvicorn

from ciserver.api import events as events_api
from ciserver.app import create_app
from ciserver.config import Settings
from ciserver.event_bus import EventHub
from ciserver.ports import free_port
from ciserver.states import Status
from ciserver.store.builds import PushRecord, record_push
from ciserver.store.db import session_scope
from ciserver.store.models import Project, Role
from ciserver.store.transitions import start_build
from tests.support.store import bearer, new_project

PUSH = PushRecord(
    ref="refs/heads/main", branch="main", tag=None, sha="c" * 40, before=None,
    message="m", author="a", changed_files=None, default_branch="main",
)  # fmt: skip


class Server:
    def __init__(self, settings: Settings) -> None:
        self.app = create_app(settings, outbox=False)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(self.app, port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def hub(self) -> EventHub | None:
        return getattr(self.app.state, "event_hub", None)


@pytest.fixture
def server(tmp_path: Path, redis_url: str) -> Iterator[Server]:
    settings = Settings(data_dir=tmp_path / "data", redis_url=redis_url)
    running = Server(settings)
    running.thread.start()
    deadline = time.monotonic() + 20
    while not running.server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    yield running
    running.server.should_exit = True
    running.thread.join(10)


def lines_of(server: Server, headers: dict[str, str], got: list[str], opened: threading.Event) -> None:
    with (
        httpx.Client(timeout=30) as client,
        client.stream("GET", f"{server.url}/api/v1/events", headers=headers) as response,
    ):
        opened.set()
        for line in response.iter_lines():
            got.append(line)
            if line.startswith("data:") or line.startswith(": keep-alive"):
                return  # the client goes away


def server_tasks(hub: EventHub) -> list[str]:
    """The names of the tasks running in the server's event loop."""

    async def names() -> list[str]:
        return sorted(task.get_name() for task in asyncio.all_tasks() if task is not asyncio.current_task())

    return asyncio.run_coroutine_threadsafe(names(), hub.loop).result(5)


def wait_until(check: object, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not check():  # type: ignore[operator]
        assert time.monotonic() < deadline
        time.sleep(0.02)


def test_one_subscription_wakes_every_client_and_clients_that_leave_leave_nothing(server: Server) -> None:
    settings: Settings = server.app.state.settings
    headers = bearer(settings, Role.viewer)
    with session_scope(settings.db_url) as session:
        project_id = new_project(session).id
    tasks = []
    for _round in range(3):
        got: list[list[str]] = [[] for _ in range(4)]
        clients = []
        for lines in got:
            opened = threading.Event()
            client = threading.Thread(target=lines_of, args=(server, headers, lines, opened), daemon=True)
            client.start()
            assert opened.wait(10)
            clients.append(client)
        hub = server.hub()
        assert hub is not None
        wait_until(lambda hub=hub: hub.streams == 4)
        with session_scope(settings.db_url) as session:
            build, _ = record_push(
                session, session.get_one(Project, project_id), PUSH, forge="x", delivery_id=None
            )
            start_build(session, build.id)
        for client in clients:
            client.join(5)
            assert not client.is_alive()
        assert all(any(f'"status": "{Status.queued}"' in line for line in lines) for lines in got)
        wait_until(lambda hub=hub: hub.streams == 0)  # each stream left the hub when its client went
        assert hub._task is None  # and with the last one, the subscription ended
        tasks.append(server_tasks(hub))
    assert tasks[0] == tasks[1] == tasks[2], tasks  # no stream's task outlives its client


def test_an_idle_stream_sends_keep_alive_comments(server: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(events_api, "KEEP_ALIVE", 0.3)
    got: list[str] = []
    opened = threading.Event()
    headers = bearer(server.app.state.settings, Role.viewer)
    client = threading.Thread(target=lines_of, args=(server, headers, got, opened), daemon=True)
    client.start()
    client.join(5)
    assert ": keep-alive" in got
