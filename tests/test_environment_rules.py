"""The server's environment rules in a real SQLite database: only the default branch declares an
environment or moves it, other refs ask within the rules, rows an older release left are treated
conservatively, listens another project serves are refused, and jobs get an environment's secrets
only for refs it allows."""

from __future__ import annotations

import pytest
from sqlalchemy.orm import Session

from ciserver.store import deployments as store
from ciserver.store import releases
from ciserver.store.environments import find, job_refusal, protect
from ciserver.store.models import Deployment, Environment, Project, Release
from ciserver.store.secrets import SecretError, secret_values, set_secret
from tests.support.store import fernet_of, green_build, new_project

SERVICE = "service: {port: 8000, health: /healthz}\n"


def pipeline(environments: dict[str, str]) -> str:
    declared = "".join(f"  {name}: {{{keys}}}\n" for name, keys in environments.items())
    return (
        "image: busybox\njobs:\n  package: {image_build: {context: .}}\nenvironments:\n" + declared + SERVICE
    )


STAGING = {"staging": "auto: true, listen: '127.0.0.1:9001', branches: [main, 'release/*']"}


@pytest.fixture
def project(session: Session) -> Project:
    return new_project(session)


def released(session: Session, project: Project, file: str, **ref: str | None) -> tuple[Release, list[int]]:
    """The release of a new green build of `file`, and the deployments it started."""
    made = green_build(session, project, file, **ref)
    started = releases.deployments_for_green_build(session, made.id)
    release = releases.release_of_build(session, project, made.id)
    return release, started


def deployed(session: Session, deployment_id: int) -> None:
    assert store.claim(session, deployment_id, "worker") is not None
    store.save_progress(session, deployment_id, color="blue", address="127.0.0.1:40000", weight=100)
    store.finish(session, deployment_id, store.DeploymentStatus.succeeded)


def test_only_the_default_branch_declares_and_its_file_gives_the_first_rules(
    session: Session, project: Project
) -> None:
    hijack = pipeline({"staging": "auto: true, listen: '127.0.0.1:9009', branches: ['**']"})
    release, started = released(session, project, hijack, branch="feature/x")
    assert started == [] and find(session, project.id, "staging") is None
    assert release.refused == {
        "staging": "environment 'staging' is not declared on the server: only a build of the default branch "
        "'main' can declare it"
    }
    tagged, started = released(session, project, hijack, branch=None, tag="v1")
    assert started == [] and "not declared" in tagged.refused["staging"]

    release, [deployment] = released(session, project, pipeline(STAGING))
    assert release.refused == {}
    row = find(session, project.id, "staging")
    assert row is not None
    assert (row.listen, row.strategy, row.branches, row.tags) == (
        "127.0.0.1:9001",
        {"blue_green": {"keep_previous": 600}},
        ["main", "release/*"],
        None,
    )
    assert (row.require_promote, row.promote_role, row.rules_by) == (
        False,
        None,
        f"build {release.build_id} of main",
    )
    assert session.get(Deployment, deployment) is not None


def test_the_default_branch_moves_listen_and_strategy_but_never_widens_the_rules(
    session: Session, project: Project
) -> None:
    released(
        session, project, pipeline({"production": "listen: '127.0.0.1:9002', after: staging", **STAGING})
    )
    moved = {
        "staging": "auto: true, listen: 'localhost:9011', strategy: recreate, branches: ['**'], tags: ['*']",
        "production": "auto: true, listen: '127.0.0.1:9002'",
    }
    _, started = released(session, project, pipeline(moved))
    staging, production = find(session, project.id, "staging"), find(session, project.id, "production")
    assert staging is not None and production is not None
    assert (staging.listen, staging.strategy) == ("127.0.0.1:9011", {"recreate": {}})
    assert (staging.branches, staging.tags) == (["main", "release/*"], None)
    # production was declared with auto: false, so a promote is required; a later `auto: true` and the
    # loss of `after` do not change that rule.
    assert production.require_promote is True and production.after is None
    assert [session.get(Deployment, d).environment.name for d in started] == ["staging"]  # type: ignore[union-attr]
    feature, _ = released(session, project, pipeline(moved), branch="feature/x")
    assert "takes branches [main, release/*]" in feature.refused["staging"]


def test_a_ref_the_rules_allow_may_narrow_but_not_move_listen_or_strategy(
    session: Session, project: Project
) -> None:
    released(session, project, pipeline(STAGING))
    manual = {"staging": "auto: false, listen: '127.0.0.1:9001', branches: ['release/*']"}
    release, started = released(session, project, pipeline(manual), branch="release/1")
    assert (release.refused, started) == ({}, [])  # taken, but waits for a promote as its file asks
    moved = {"staging": "auto: true, listen: '127.0.0.1:9099', branches: ['**']"}
    release, started = released(session, project, pipeline(moved), branch="release/2")
    assert started == []
    assert release.refused["staging"] == (
        "environments.staging.listen: 127.0.0.1:9099 is not the server's 127.0.0.1:9001; "
        "only the default branch 'main' may change it"
    )
    restrategised = {
        "staging": "auto: true, listen: 'localhost:9001', strategy: {canary: {}}, branches: ['**']"
    }
    release, started = released(session, project, pipeline(restrategised), branch="release/3")
    assert started == []
    assert release.refused["staging"].startswith(
        "environments.staging.strategy: canary from the server's blue_green"
    )
    narrowed = {"staging": "auto: true, listen: '127.0.0.1:9001', branches: [main]"}
    release, started = released(session, project, pipeline(narrowed), branch="release/4")
    assert started == [] and release.refused["staging"].startswith(
        "its pipeline's environment 'staging' takes"
    )


def test_an_environment_an_older_release_recorded_takes_only_the_default_branch_until_declared(
    session: Session, project: Project
) -> None:
    session.add(Environment(project_id=project.id, name="staging", listen="127.0.0.01:09001"))
    session.flush()
    release, started = released(session, project, pipeline(STAGING), branch="release/1")
    assert started == []
    assert "not yet declared by the default branch 'main'" in release.refused["staging"]
    released(session, project, pipeline(STAGING))
    row = find(session, project.id, "staging")
    assert row is not None and row.branches == ["main", "release/*"] and row.listen == "127.0.0.1:9001"
    assert released(session, project, pipeline(STAGING), branch="release/1")[0].refused == {}


def test_a_listen_another_project_serves_is_refused_naming_it(session: Session, project: Project) -> None:
    other = new_project(session, "acme/shop")
    _, [serving] = released(session, other, pipeline({"web": "auto: true, listen: '127.0.0.1:9001'"}))
    deployed(session, serving)
    # A row an older release wrote keeps its spelling; the socket is the same.
    web = find(session, other.id, "web")
    assert web is not None
    web.listen = "localhost:09001"
    release, started = released(session, project, pipeline({"staging": "auto: true, listen: '0.0.0.0:9001'"}))
    assert started == [] and find(session, project.id, "staging") is None
    assert release.refused["staging"] == (
        "listen: 0.0.0.0:9001 is already the address of environment 'web' of project acme/shop"
    )


def test_a_waiting_deployment_whose_ref_the_rules_no_longer_allow_is_not_started(
    session: Session, project: Project
) -> None:
    released(session, project, pipeline(STAGING))
    _, [waiting] = released(session, project, pipeline(STAGING), branch="release/1")
    protect(session, project, "staging", "token:1 (ops)", branches=["main"], tags=None)
    assert store.claim(session, waiting, "worker") is None
    deployment = session.get(Deployment, waiting)
    assert deployment is not None and deployment.status == "failed"
    assert "takes branches [main] (its rules on the server)" in (deployment.reason or "")


def test_require_promote_set_by_ops_before_the_first_push_stops_auto(
    session: Session, project: Project
) -> None:
    protect(session, project, "staging", "cli:ops", require_promote=True)
    release, started = released(session, project, pipeline(STAGING))
    assert (release.refused, started) == ({}, [])
    row = find(session, project.id, "staging")
    assert row is not None and row.listen == "127.0.0.1:9001" and row.rules_by == "cli:ops"
    assert (row.branches, row.tags) == (None, None), "ops' rules stay: the default branch only"
    assert releases.promote(session, project, "staging", release.build_id, "token:1").action == "promote"


def test_jobs_get_an_environment_only_for_refs_its_rules_allow(session: Session, project: Project) -> None:
    main = green_build(session, project, pipeline(STAGING))
    feature = green_build(session, project, pipeline(STAGING), branch="feature/x")
    assert job_refusal(session, main, "production") is None  # unknown: the default branch only
    assert job_refusal(session, feature, "production") == (
        "environment 'production' takes the default branch 'main' (its rules on the server); "
        "a job of branch 'feature/x' may not use it or its secrets"
    )
    protect(session, project, "production", "token:1 (ops)", branches=["feature/*"], tags=None)
    assert job_refusal(session, feature, "production") is None
    assert job_refusal(session, main, "production") is not None


def test_a_scoped_secret_is_its_environments_value_over_the_projects(
    session: Session, project: Project
) -> None:
    fernet = fernet_of(session)
    set_secret(session, project, "DB_URL", "shared-value-1", fernet)
    set_secret(session, project, "DB_URL", "production-value-2", fernet, "production")
    set_secret(session, project, "ONLY_PROD", "production-only-3", fernet, "production")
    assert secret_values(session, project.id, ["DB_URL"], fernet) == {"DB_URL": "shared-value-1"}
    assert secret_values(session, project.id, ["DB_URL"], fernet, "staging") == {"DB_URL": "shared-value-1"}
    assert secret_values(session, project.id, ["DB_URL", "ONLY_PROD"], fernet, "production") == {
        "DB_URL": "production-value-2",
        "ONLY_PROD": "production-only-3",
    }
    with pytest.raises(SecretError) as missing:
        secret_values(session, project.id, ["ONLY_PROD"], fernet, "staging")
    assert str(missing.value).startswith(
        "secrets: ONLY_PROD not set for project octo/app or its environment staging; "
        "ONLY_PROD is set for environment production only (a job gets those with `environment:`)"
    )
    with pytest.raises(SecretError, match="environment: 'Prod!' is not an environment name"):
        set_secret(session, project, "DB_URL", "whatever-value", fernet, "Prod!")
