"""`ciserver worker --router`: the private nginx (ciserver.private_nginx) for the life of one worker,
so a deploy worker in a container brings the router its deployments reload, as `up` does on a host."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

from ciserver.child_process import StartError
from ciserver.config import Settings, get_settings
from ciserver.private_nginx import find_nginx, start_nginx, stop_nginx


class WorkerRouterError(Exception):
    """The worker cannot run its router; the message says what to install or unset."""


@contextmanager
def running_router(settings: Settings) -> Iterator[Settings]:
    """nginx started on the data dir's router directory, stopped gracefully on the way out; yields
    the settings with its reload command. The worker's tasks read the process's own settings
    (get_settings), so the command is put in the environment they are read from too."""
    if settings.router_reload:
        raise WorkerRouterError(
            "--router starts its own nginx: unset CISERVER_ROUTER_RELOAD (it names another nginx)"
        )
    server = find_nginx()
    if server is None:
        raise WorkerRouterError("--router needs nginx: install it (Debian/Ubuntu: apt-get install nginx)")
    try:
        nginx, reload = start_nginx(settings, server)
    except StartError as exc:
        raise WorkerRouterError(str(exc)) from None
    os.environ["CISERVER_ROUTER_RELOAD"] = reload
    get_settings.cache_clear()
    try:
        yield settings.model_copy(update={"router_reload": reload})
    finally:
        stop_nginx(nginx)
