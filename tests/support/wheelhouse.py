"""Wheels for the image of ciserver, made on the host: no package index is reachable from inside a
build on our machines, and the tests' base image has no pip.

The host's pip resolves environment markers for the host's Python, not the image's (redis needs
async-timeout below 3.11.3: Debian bookworm has 3.11.2), so the image's own Python checks the
wheelhouse offline, and whatever it finds missing is added from the host until nothing is."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

MISSING = re.compile(r"No matching distribution found for (\S+)")


def build_wheelhouse(
    project: Path, dest: Path, base_image: str, rounds: int = 5, extras: str = "postgres"
) -> None:
    """Fill `dest` with the wheels of `project` with `extras` (the Dockerfile's EXTRAS, whose default
    this is), of its dependencies and of pip, for `base_image`."""
    wanted = f"[{extras}]" if extras else ""
    _pip_wheel(dest, f"{project}{wanted}", "pip")
    for _ in range(rounds):
        missing = _missing(dest, base_image, f"ciserver{wanted}")
        if not missing:
            return
        _pip_wheel(dest, *missing)
    raise AssertionError(f"the wheelhouse still lacks {missing} for {base_image}")


def _pip_wheel(dest: Path, *requirements: str) -> None:
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--wheel-dir", str(dest), *requirements], check=True
    )


def _missing(wheels: Path, base_image: str, requirement: str) -> list[str]:
    """What pip, run by the base image's Python without network, cannot find in `wheels`."""
    pip = next(wheels.glob("pip-*.whl")).name
    run = subprocess.run(
        ["docker", "run", "--rm", "--network", "none", "-v", f"{wheels}:/wheels:ro", base_image,
         "python3", f"/wheels/{pip}/pip", "install", "--dry-run", "--quiet", "--no-index",
         "--disable-pip-version-check", "--find-links", "/wheels", "--target", "/tmp/t",
         requirement],
        capture_output=True,
        text=True,
    )  # fmt: skip
    if run.returncode == 0:
        return []
    missing = MISSING.findall(run.stderr)
    if not missing:
        raise AssertionError(f"pip in {base_image} failed:\n{run.stderr}")
    return missing
