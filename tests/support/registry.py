"""A private Docker registry for a test: Debian's `docker-registry` (the distribution registry) on a
free loopback port, storing in a temporary directory. The engine treats registries on 127.0.0.0/8 as
insecure, so it pushes and pulls there over plain HTTP."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from ciserver.ports import free_port

BINARY = "/usr/bin/docker-registry"
MANIFEST_TYPES = ", ".join(
    [
        "application/vnd.docker.distribution.manifest.v2+json",
        "application/vnd.oci.image.manifest.v1+json",
    ]
)


class Registry:
    """`docker-registry serve` with filesystem storage; stop() and start() again keep its images."""

    def __init__(self, root: Path) -> None:
        self.root, self.port = root, free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.url = f"http://{self.address}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Registry:
        if not Path(BINARY).exists() and shutil.which("docker-registry") is None:
            raise AssertionError(
                f"{BINARY} is missing: install Debian's docker-registry package "
                "(apt-get install docker-registry; .ci/run installs it)"
            )
        self.root.mkdir(parents=True, exist_ok=True)
        config = self.root / "config.yml"
        config.write_text(
            "version: 0.1\n"
            "log: {level: warn}\n"
            f"storage:\n  filesystem: {{rootdirectory: {self.root / 'data'}}}\n  delete: {{enabled: true}}\n"
            f"http: {{addr: '{self.address}'}}\n"
        )
        with open(self.root / "registry.log", "ab") as log:
            self.proc = subprocess.Popen(
                [shutil.which("docker-registry") or BINARY, "serve", str(config)],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 20
        while True:
            try:
                if httpx.get(f"{self.url}/v2/", timeout=1).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(
                    "docker-registry did not answer GET /v2/: " + (self.root / "registry.log").read_text()
                )
            time.sleep(0.1)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.proc = None

    def tags(self, repository: str) -> list[str]:
        """The repository's tags (`GET /v2/<repo>/tags/list`); [] for a repository it does not hold."""
        response = httpx.get(f"{self.url}/v2/{repository}/tags/list", timeout=10)
        if response.status_code == 404:
            return []
        response.raise_for_status()
        return response.json().get("tags") or []

    def digest(self, repository: str, tag: str) -> str:
        """The manifest digest the registry serves `repository:tag` by (sha256:...)."""
        response = httpx.head(
            f"{self.url}/v2/{repository}/manifests/{tag}", headers={"Accept": MANIFEST_TYPES}, timeout=10
        )
        response.raise_for_status()
        return response.headers["Docker-Content-Digest"]


@pytest.fixture(name="registry", scope="module")
def registry_fixture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    """A registry for the module's tests, stopped (and its storage left to pytest) after them."""
    registry = Registry(tmp_path_factory.mktemp("registry")).start()
    try:
        yield registry
    finally:
        registry.stop()
