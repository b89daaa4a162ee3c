"""environments: and service: in pipelines.yml: what they become, and the errors a person gets,
each at the line and key to change."""

from __future__ import annotations

import pytest

from ciserver.pipeline import PipelineError, accepted_refs, accepts_release, load_pipeline

HEAD = """\
image: ciserver-test/busybox:latest
jobs:
  unit: {script: ["true"]}
"""
SERVICE = "service: {port: 8000, health: /healthz}\n"


def load(environments: str, service: str = SERVICE):  # type: ignore[no-untyped-def]
    return load_pipeline(HEAD + "environments:\n" + environments + service)


def error(environments: str, service: str = SERVICE) -> str:
    with pytest.raises(PipelineError) as caught:
        load(environments, service)
    return str(caught.value)


def test_the_strategies_and_their_defaults() -> None:
    pipeline = load(
        "  staging: {auto: true, listen: '127.0.0.1:9001'}\n"
        "  demo: {listen: '127.0.0.1:9003', strategy: recreate}\n"
        "  production:\n"
        "    after: staging\n"
        "    listen: 127.0.0.1:9002\n"
        "    strategy: {canary: {steps: [5, 25, 50], interval: 30s}}\n"
    )
    staging, demo, production = (pipeline.environments[n] for n in ("staging", "demo", "production"))
    assert staging.auto and staging.strategy.kind == "blue_green" and staging.strategy.keep_previous == 600
    assert demo.strategy.kind == "recreate" and demo.strategy.keep_previous == 0
    canary = production.strategy.canary
    assert canary is not None and production.auto is False
    assert canary.steps == [5, 25, 50, 100]  # full promotion ends the steps even when not written
    assert (canary.interval, canary.max_error_rate, canary.min_requests) == (30, 0.01, 50)
    assert pipeline.service is not None and pipeline.service.health == "/healthz"


def test_a_dumped_release_config_loads_again_as_it_was() -> None:
    pipeline = load("  production: {listen: '127.0.0.1:9002', strategy: {canary: {interval: 1m}}}\n")
    dumped = pipeline.model_dump(mode="json", include={"environments", "service"}, exclude_none=True)
    again = load_pipeline(HEAD + f"environments: {dumped['environments']}\nservice: {dumped['service']}\n")
    assert again.environments == pipeline.environments and again.service == pipeline.service


@pytest.mark.parametrize(
    ("environments", "service", "expected"),
    [
        (
            "  a: {listen: '127.0.0.1:9001'}\n  b: {listen: '127.0.0.1:9001'}\n",
            SERVICE,
            "pipelines.yml:6: environments.b.listen: 127.0.0.1:9001 is already the address of environment",
        ),
        (
            "  a: {listen: '127.0.0.1:9001'}\n  b: {listen: '127.0.0.01:09001'}\n",
            SERVICE,
            "pipelines.yml:6: environments.b.listen: 127.0.0.1:9001 is already the address of environment",
        ),
        (
            "  a: {listen: 'localhost:9001'}\n  b: {listen: '0.0.0.0:9001'}\n",
            SERVICE,
            "environments.b.listen: 0.0.0.0:9001 is already the address of environment 'a'",
        ),
        (
            "  a: {listen: '127.0.0.1:9001', strategy: rolling}\n",
            SERVICE,
            "pipelines.yml:5: environments.a.strategy: unknown strategy 'rolling'",
        ),
        (
            "  a: {listen: '127.0.0.1:9001', strategy: {canary: {steps: [50, 25]}}}\n",
            SERVICE,
            "environments.a.strategy.canary.steps: steps must increase: [50, 25]",
        ),
        (
            "  a: {listen: '127.0.0.1:9001', strategy: {canary: {}, recreate: {}}}\n",
            SERVICE,
            "environments.a.strategy: give exactly one of recreate, blue_green, canary",
        ),
        (
            "  a: {listen: '127.0.0.1:9001', after: b}\n",
            SERVICE,
            "environments.a.after: no environment is named 'b'",
        ),
        (
            "  a: {listen: '127.0.0.1:9001', after: b}\n  b: {listen: '127.0.0.1:9002', after: a}\n",
            SERVICE,
            "after makes a loop: a -> b -> a",
        ),
        (
            "  a: {auto: true}\n",
            SERVICE,
            "environments.a: give listen (where nginx serves it) or a deploy script",
        ),
        ("  a: {listen: '127.0.0.1:9001'}\n", "", "environments.a: deploying needs a top-level service"),
        ("  a: {listen: 'example.com:80'}\n", SERVICE, "invalid listen address 'example.com:80'"),
        ("  a: {listen: '127.0.0.1:70000'}\n", SERVICE, "invalid listen address '127.0.0.1:70000'"),
        ("  Prod: {listen: '127.0.0.1:9001'}\n", SERVICE, "invalid environment name 'Prod'"),
        ("  a: {listen: '127.0.0.1:9001', auto: 'yes'}\n", SERVICE, "environments.a.auto"),
        (
            "  a: {script: [deploy], listen: '127.0.0.1:9001'}\n",
            SERVICE,
            "environments.a.listen: a script deploy routes its own traffic",
        ),
        ("  a: {listen: '127.0.0.1:9001', strategi: canary}\n", SERVICE, "did you mean 'strategy'?"),
        (
            "  a: {listen: '127.0.0.1:9001', strategy: {canary: {intervall: 1m}}}\n",
            SERVICE,
            "environments.a.strategy.canary.intervall: unknown key (did you mean 'interval'?)",
        ),
        ("  a: {listen: '127.0.0.1:9001'}\n", "service: {port: 8000, helth: /}\n", "did you mean 'health'?"),
        (
            "  a: {listen: '127.0.0.1:9001'}\n",
            "service: {port: 8000, health: 'x y'}\n",
            "invalid health path",
        ),
    ],
)
def test_mistakes_are_named_at_their_key(environments: str, service: str, expected: str) -> None:
    assert expected in error(environments, service)


def test_a_script_deploy_needs_no_service_and_runs_in_the_top_level_image() -> None:
    pipeline = load("  cloud: {script: ['deploy --weight $DEPLOY_WEIGHT']}\n", service="")
    assert pipeline.environments["cloud"].script == ["deploy --weight $DEPLOY_WEIGHT"]
    assert pipeline.service is None


def test_which_pushes_an_environment_takes_releases_of() -> None:
    pipeline = load(
        "  staging: {listen: '127.0.0.1:9001'}\n"
        "  production: {listen: '127.0.0.1:9002', branches: ['release/*'], tags: ['v*']}\n"
    )
    staging, production = pipeline.environments["staging"], pipeline.environments["production"]
    assert accepts_release(staging, branch="trunk", tag=None, default_branch="trunk")
    assert not accepts_release(staging, branch="feature", tag=None, default_branch="trunk")
    assert accepts_release(staging, branch="main", tag=None, default_branch=None)
    assert not accepts_release(staging, branch=None, tag="v1", default_branch="main")
    assert accepts_release(production, branch="release/2", tag=None, default_branch="main")
    assert accepts_release(production, branch=None, tag="v1.2", default_branch="main")
    assert not accepts_release(production, branch="main", tag=None, default_branch="main")
    assert accepted_refs(staging, "trunk") == "the default branch 'trunk'"
    assert accepted_refs(production, "main") == "branches [release/*] and tags [v*]"


@pytest.mark.parametrize(
    ("written", "socket"),
    [
        ("127.0.0.1:9001", "127.0.0.1:9001"),
        ("127.0.0.01:09001", "127.0.0.1:9001"),
        ("localhost:9001", "127.0.0.1:9001"),
        ("[0:0:0::1]:8080", "[::1]:8080"),
    ],
)
def test_a_listen_address_is_kept_as_the_one_socket_nginx_binds(written: str, socket: str) -> None:
    pipeline = load(f"  a: {{listen: '{written}'}}\n")
    assert pipeline.environments["a"].listen == socket
