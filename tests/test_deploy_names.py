"""The names an environment goes by outside the database (nginx file and log, containers, network,
retire task), and the tags of release images: readable, and never shared by two projects or
environments."""

from __future__ import annotations

import re

import pytest
from docker.utils.build import match_tag
from hypothesis import given
from hypothesis import strategies as st

from ciserver.deploy.names import deploy_name, release_tag
from ciserver.deploy.router import Backend, upstream_config
from ciserver.pipeline.environments import ENVIRONMENT_NAME
from workers.executors.docker_service import container_name, network_name

LOOK_ALIKES = [
    ("acme/shop", "prod-eu"),
    ("acme-shop/prod", "eu"),
    ("Acme/Shop", "prod-eu"),
    ("acme/shop.prod", "eu"),
]
DOCKER_NAME = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.-]+")
PROJECT = st.from_regex(
    r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,30}(/[A-Za-z0-9_][A-Za-z0-9_.-]{0,30}){1,3}", fullmatch=True
)


def test_look_alike_projects_and_environments_get_names_of_their_own() -> None:
    names = [deploy_name(project, environment) for project, environment in LOOK_ALIKES]
    assert len(set(names)) == len(names)
    assert all(name.startswith("acme-shop-prod-eu-") for name in names)  # still readable
    assert len({container_name("/srv/ci", *pair, "blue") for pair in LOOK_ALIKES}) == len(LOOK_ALIKES)
    assert len({network_name("/srv/ci", *pair) for pair in LOOK_ALIKES}) == len(LOOK_ALIKES)


def test_two_installations_on_one_engine_do_not_share_container_or_network_names() -> None:
    assert container_name("/srv/ci", "acme/shop", "prod", "blue") != container_name(
        "/srv/ci-staging", "acme/shop", "prod", "blue"
    )
    assert network_name("/srv/ci", "acme/shop", "prod") != network_name(
        "/srv/ci-staging", "acme/shop", "prod"
    )


@pytest.mark.parametrize("project", ["acme/" + "x" * 240, "_/_", "a.b/c.d"])
def test_long_and_odd_project_names_give_names_nginx_and_docker_take(project: str) -> None:
    name = deploy_name(project, "e" * 63)
    assert len(name) <= 100
    assert upstream_config(name, "127.0.0.1:9001", [Backend("127.0.0.1:8000", 100)])  # nginx takes it
    assert DOCKER_NAME.fullmatch(container_name("/srv/ci", project, "e" * 63, "green"))


@given(PROJECT, st.from_regex(ENVIRONMENT_NAME, fullmatch=True))
def test_every_registrable_project_and_environment_has_a_usable_name(project: str, environment: str) -> None:
    name = deploy_name(project, environment)
    assert upstream_config(name, "127.0.0.1:9001", [Backend("127.0.0.1:8000", 100)])
    assert DOCKER_NAME.fullmatch(container_name("/srv/ci", project, environment, "blue"))
    assert name == deploy_name(project, environment)


def test_release_images_of_look_alike_projects_have_tags_of_their_own() -> None:
    sha = "a" * 40
    tags = {release_tag(project, sha) for project in ("acme/shop-prod", "acme-shop/prod", "acme/shop.prod")}
    assert len(tags) == 3
    assert all(tag.startswith("ciserver/acme-shop-prod-") and tag.endswith(f":{sha}") for tag in tags)


@given(PROJECT, st.from_regex(r"[0-9a-f]{40}|[0-9a-f]{64}", fullmatch=True))
def test_every_registrable_project_has_a_release_tag_docker_takes(project: str, sha: str) -> None:
    assert match_tag(release_tag(project, sha)), release_tag(project, sha)


@given(PROJECT, st.from_regex(r"[0-9a-f]{40}", fullmatch=True))
def test_with_a_registry_the_release_tag_is_the_registry_s_and_docker_takes_it(
    project: str, sha: str
) -> None:
    tag = release_tag(project, sha, "registry.example:5000")
    assert tag == f"registry.example:5000/{release_tag(project, sha)}"
    assert match_tag(tag), tag
    repository, _, pushed = tag.rpartition(":")  # the split a push makes: the port stays in the repo
    assert repository.startswith("registry.example:5000/ciserver/") and pushed == sha
