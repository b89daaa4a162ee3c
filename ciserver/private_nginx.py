"""The private nginx that deployments shift traffic with: its configuration, environments and logs
under the data dir. `ciserver up` runs one beside its workers, `ciserver worker --router` one around
a deploy worker (the deployer of docker-compose.yml), with the same code."""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import time

from ciserver.child_process import Child, StartError, wait
from ciserver.config import Settings
from ciserver.deploy.nginx_control import CONTROL_FILE
from ciserver.deploy.router import main_config


def find_nginx() -> str | None:
    """The nginx binary; Debian puts it in /usr/sbin, which a user's PATH may lack."""
    return shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/sbin")


def start_nginx(settings: Settings, server: str) -> tuple[Child, str]:
    """Start `server` on the data dir's router directory; returns it and the command that reloads it."""
    root = settings.router_dir
    for sub in ("logs", "temp", "environments"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    conf = root / "nginx.conf"
    conf.write_text(main_config(root))
    (root / "nginx.pid").unlink(missing_ok=True)
    # The router's marker server: its port may have been taken while nginx was down, and nginx
    # would not start; the first change writes it again on a free port.
    (root / "environments" / CONTROL_FILE).unlink(missing_ok=True)
    argv = [server, "-p", str(root), "-c", str(conf)]
    nginx = Child("nginx", argv, dict(os.environ), settings.process_logs_dir / "nginx.log")
    nginx.start()
    deadline = time.monotonic() + 15
    while not (root / "nginx.pid").exists():
        if not nginx.alive() or time.monotonic() > deadline:
            raise StartError(f"nginx did not start; see {nginx.log_path} and {root / 'logs'}")
        time.sleep(0.05)
    return nginx, shlex.join([*argv, "-s", "reload"])


def stop_nginx(nginx: Child) -> None:
    """Gracefully: the requests in flight are answered, then nginx exits."""
    nginx.signal(signal.SIGQUIT)
    wait([nginx], 10)
    nginx.signal(signal.SIGKILL)
    wait([nginx], 2)
