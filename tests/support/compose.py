"""The top-level docker-compose.yml run for real, as an operator runs it: `docker-compose -p NAME`
with an .env of the test's own (free loopback ports, fresh secrets) and the test override that swaps
in locally built images (tests/compose/docker-compose.test.yml, scripts/build-compose-images).

Everything it made goes at the end: the project's containers, networks and volumes, the services
the deployer started on the engine, and the release images the builds made."""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
from cryptography.fernet import Fernet

from ciserver.ports import free_port

ROOT = Path(__file__).resolve().parents[2]
OVERRIDE = ROOT / "tests" / "compose" / "docker-compose.test.yml"


def build_images() -> None:
    """The stand-in images; a second run only checks that they exist (scripts/build-compose-images)."""
    if shutil.which("docker-compose") is None:
        raise AssertionError("docker-compose is missing: apt-get install docker-compose (.ci/run does)")
    run = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "build-compose-images")], capture_output=True, text=True
    )
    assert run.returncode == 0, run.stdout + run.stderr


class ComposeStack:
    """One compose project: its .env, its ports, its data dir and the test's repositories' folder."""

    def __init__(self, root: Path, **settings: str) -> None:
        self.root, self.name = root, f"cisertest{uuid.uuid4().hex[:10]}"
        self.data_dir, self.repos = root / "data", root / "repos"
        self.data_dir.mkdir(parents=True)
        self.repos.mkdir()
        self.admin_token = secrets.token_hex(32)
        self.images: list[str] = []  # ids of the release images the test saw built: all their tags go
        self.ports = {key: free_port() for key in ("API", "REDIS", "POSTGRES", "REGISTRY")}
        values = {
            "CISERVER_SECRET_KEY": Fernet.generate_key().decode(),
            "CISERVER_ADMIN_TOKEN": self.admin_token,
            "CISERVER_POSTGRES_PASSWORD": secrets.token_hex(12),
            "CISERVER_REDIS_PASSWORD": secrets.token_hex(12),
            "CISERVER_HOST_DATA_DIR": str(self.data_dir),
            "CISERVER_TEST_REPOS": str(self.repos),
            **{f"CISERVER_{key}_PORT": str(port) for key, port in self.ports.items()},
            **settings,
        }
        self.env_file = root / "compose.env"
        self.env_file.write_text("".join(f"{key}={value}\n" for key, value in values.items()))
        self.api = f"http://127.0.0.1:{self.ports['API']}"
        self.registry = f"127.0.0.1:{self.ports['REGISTRY']}"
        self.http = httpx.Client(
            base_url=self.api, timeout=30, headers={"Authorization": f"Bearer {self.admin_token}"}
        )

    def compose(self, *args: str, timeout: float = 180) -> str:
        # Only the .env file speaks: a CISERVER_* or COMPOSE_* variable of the caller's would win over it.
        env = {k: v for k, v in os.environ.items() if not k.startswith(("CISERVER_", "COMPOSE_"))}
        command = ["docker-compose", "--env-file", str(self.env_file), "-p", self.name,
                   "-f", str(ROOT / "docker-compose.yml"), "-f", str(OVERRIDE), *args]  # fmt: skip
        run = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
        assert run.returncode == 0, f"docker-compose {' '.join(args)}:\n{run.stdout}{run.stderr}"
        return run.stdout

    def up(self, *args: str) -> None:
        """`up -d` (never building: the images are the stand-ins), then the API's first answer."""
        self.compose("up", "-d", "--no-build", *args)
        deadline = time.monotonic() + 90
        while True:
            try:
                if httpx.get(f"{self.api}/healthz", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "the API never answered:\n" + self.logs()
            time.sleep(0.3)

    def containers(self, service: str) -> list[str]:
        """Full ids of the service's running containers."""
        return self.compose("ps", "-q", service).split()

    def logs(self) -> str:
        return self.compose("logs", "--no-color", "--tail", "40")

    def destroy(self) -> None:
        """Everything this stack made, whatever state the test left it in."""
        subprocess.run(
            ["docker-compose", "--env-file", str(self.env_file), "-p", self.name, "-f",
             str(ROOT / "docker-compose.yml"), "-f", str(OVERRIDE), "down", "-v", "--remove-orphans",
             "-t", "5"],
            cwd=ROOT, capture_output=True, timeout=180,
        )  # fmt: skip
        for label in (f"ciserver.deploy={self.data_dir}", f"ciserver.data_dir={self.data_dir}"):
            for kind, remove in ((["ps", "-aq"], ["rm", "-f"]), (["network", "ls", "-q"], ["network", "rm"])):
                found = _docker(*kind, "--filter", f"label={label}").split()
                if found:
                    _docker(*remove, *found)
        pushed = _docker("images", "--format", "{{.Repository}}:{{.Tag}}").split()
        doomed = [*filter(None, self.images), *(ref for ref in pushed if ref.startswith(f"{self.registry}/"))]
        if doomed:
            _docker("rmi", "-f", *doomed)
        self.http.close()
        # The workers run as root: their files in the data dir are root's.
        shutil.rmtree(self.root, ignore_errors=True)


def _docker(*args: str) -> str:
    return subprocess.run(["docker", *args], capture_output=True, text=True).stdout
