"""`ciserver worker --router`: the private nginx runs exactly as long as the worker, on the data dir's
router directory, and the worker's tasks see its reload command; another nginx's command is refused."""

from __future__ import annotations

import os
import shlex
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from ciserver.config import Settings, get_settings
from ciserver.private_nginx import find_nginx
from ciserver.worker_router import WorkerRouterError, running_router


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Settings]:
    monkeypatch.setenv("CISERVER_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("CISERVER_ROUTER_RELOAD", raising=False)
    get_settings.cache_clear()
    yield get_settings()
    get_settings.cache_clear()


@pytest.mark.skipif(find_nginx() is None, reason="nginx is not installed")
def test_the_router_runs_while_the_worker_does_and_its_reload_command_works(settings: Settings) -> None:
    pid_file = settings.router_dir / "nginx.pid"
    with running_router(settings) as running:
        pid = int(pid_file.read_text())
        assert running.router_reload == os.environ["CISERVER_ROUTER_RELOAD"]
        assert get_settings().router_reload == running.router_reload  # what the tasks read
        subprocess.run(shlex.split(running.router_reload), check=True, capture_output=True)
        assert Path(f"/proc/{pid}").exists()
    os.environ.pop("CISERVER_ROUTER_RELOAD")
    assert not Path(f"/proc/{pid}").exists() or "nginx" not in Path(f"/proc/{pid}/comm").read_text()


def test_a_reload_command_of_another_nginx_is_refused(settings: Settings) -> None:
    other = settings.model_copy(update={"router_reload": "nginx -s reload"})
    with pytest.raises(WorkerRouterError, match="unset CISERVER_ROUTER_RELOAD"), running_router(other):
        pass
