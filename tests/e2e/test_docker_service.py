"""Deployed services on a real Docker Engine: each environment's containers sit on a bridge of its
own (reached by nginx through the port published on loopback), which goes with its last container;
the reaper of lost jobs leaves deployed services and their networks alone."""

from __future__ import annotations

import json
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from ciserver.config import Settings
from workers.context import WorkerContext
from workers.executors.docker_service import DockerServiceTarget, ServiceRelease
from workers.reaper import Reaper

# One database is enough here: services are containers on the engine, the same whatever the database.
ONE_DATABASE = True

HTTPD = ["sh", "-c", "mkdir -p /www && echo ok > /www/healthz && exec httpd -f -p 8000 -h /www"]


@pytest.fixture
def release_image(tmp_path: Path, busybox_image: str) -> Iterator[str]:
    """A release image as an image_build job leaves it: with that job's labels, of this data dir."""
    tag = f"ciserver-test/service-{uuid.uuid4().hex[:12]}:1"
    labels = {"ciserver.data_dir": str(tmp_path), "ciserver.job": "7", "ciserver.worker": "gone.1"}
    flags = [arg for key, value in labels.items() for arg in ("--label", f"{key}={value}")]
    subprocess.run(
        ["docker", "build", "-q", "-t", tag, *flags, "-"],
        input=f"FROM {busybox_image}\n",
        check=True,
        capture_output=True,
        text=True,
    )
    yield tag
    for kind, listing in (("container", ["ps", "-aq"]), ("network", ["network", "ls", "-q"])):
        found = docker(*listing, "--filter", f"label=ciserver.deploy={tmp_path}").split()
        if found:
            subprocess.run(["docker", kind, "rm", *(["-f"] if kind == "container" else []), *found])
    subprocess.run(["docker", "rmi", "-f", tag], capture_output=True)


def docker(*args: str) -> str:
    return subprocess.run(["docker", *args], check=True, capture_output=True, text=True).stdout


def service(data_dir: Path, project: str, environment: str, image: str) -> DockerServiceTarget:
    release = ServiceRelease(project, environment, str(data_dir), image, 8000, "/healthz", command=HTTPD)
    return DockerServiceTarget(release)


def networks_of(container: str) -> set[str]:
    return set(json.loads(docker("inspect", "-f", "{{json .NetworkSettings.Networks}}", container)))


def network_exists(name: str) -> bool:
    return subprocess.run(["docker", "network", "inspect", name], capture_output=True).returncode == 0


def healthy(target: DockerServiceTarget, address: str) -> bool:
    deadline = time.monotonic() + 10
    while target.healthy(address) is not None:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def test_each_environment_has_a_network_of_its_own_that_goes_with_its_last_container(
    tmp_path: Path, release_image: str
) -> None:
    shop = service(tmp_path, "acme/shop", "prod-eu", release_image)
    look_alike = service(tmp_path, "acme-shop/prod", "eu", release_image)
    addresses = [shop.start("blue"), shop.start("green"), look_alike.start("blue")]
    assert all(healthy(shop, address) for address in addresses)  # through the loopback port
    shops, look_alikes = shop.network, look_alike.network
    assert networks_of(shop.name("blue")) == networks_of(shop.name("green")) == {shops}
    assert networks_of(look_alike.name("blue")) == {look_alikes} != {shops}

    shop.remove("blue")
    assert network_exists(shops)  # green still runs on it
    shop.remove("green")
    assert not network_exists(shops)
    assert network_exists(look_alikes)
    assert healthy(look_alike, addresses[2])


def test_the_reaper_leaves_deployed_services_and_their_networks_alone(
    tmp_path: Path, release_image: str
) -> None:
    target = service(tmp_path, "acme/shop", "prod", release_image)
    address = target.start("blue")
    # No worker is alive: every job container of this data dir would be taken for a lost one.
    Reaper(WorkerContext(Settings(data_dir=tmp_path))).remove_containers(alive=set())
    assert docker("inspect", "-f", "{{.State.Running}}", target.name("blue")).strip() == "true"
    assert network_exists(target.network)
    assert healthy(target, address)
