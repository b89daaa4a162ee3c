"""The `ciserver` client commands for releases: environments, promote, rollback, deployments,
deployment (with --follow), pause, resume, abort.

Promote, rollback, pause, resume and abort need the environment's promote role (ops unless its rules
say otherwise): the server decides, and its refusal is printed as it said it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from ciserver.cli_client import DEFAULT_URL, PANEL, Json, Token, Url, connected, print_json
from ciserver.cli_common import ProjectArg
from ciserver.states import DeploymentStatus

if TYPE_CHECKING:
    from ciserver.client import Client

EnvArg = Annotated[str, typer.Argument(help="The environment's name, as pipelines.yml declares it.")]
Follow = Annotated[bool, typer.Option("--follow", "-f", help="Follow the deployment until it ends.")]
DeploymentId = Annotated[
    int, typer.Argument(min=1, max=2**63 - 1, help="The deployment's id (`ciserver deployments`).")
]


def environments(
    project: ProjectArg, as_json: Json = False, url: Url = DEFAULT_URL, token: Token = None
) -> None:
    """Show a project's environments: what runs where, since when, by whom, the latest deployment."""
    with connected(url, token) as client:
        found = client.environments(project)
    if as_json:
        print_json(found)
    else:
        from ciserver.client_render import console, environments_table

        console().print(environments_table(found))


def promote(
    project: ProjectArg,
    environment: EnvArg,
    build_id: Annotated[int, typer.Argument(min=1, max=2**63 - 1, help="The build whose release to deploy.")],
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Follow the deployment until it ends.")
    ] = False,
    url: Url = DEFAULT_URL,
    token: Token = None,
) -> None:
    """Deploy a build's release to an environment (continuous delivery)."""
    with connected(url, token) as client:
        started = client.promote(project, environment, build_id)
        _started(started["id"], environment, f"build {build_id} ")
        if follow:
            _follow(client, started["id"], as_json=False)


def rollback(
    project: ProjectArg,
    environment: EnvArg,
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Follow the deployment until it ends.")
    ] = False,
    url: Url = DEFAULT_URL,
    token: Token = None,
) -> None:
    """Deploy the release an environment ran before the current one, with its strategy."""
    with connected(url, token) as client:
        started = client.rollback(project, environment)
        _started(started["id"], environment, f"build {started['build_id']} back ")
        if follow:
            _follow(client, started["id"], as_json=False)


def deployments(
    project: ProjectArg,
    environment: Annotated[str | None, typer.Option(help="Only this environment's.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=500, help="How many, newest first.")] = 20,
    as_json: Json = False,
    url: Url = DEFAULT_URL,
    token: Token = None,
) -> None:
    """List a project's deployments, newest first."""
    with connected(url, token) as client:
        found = client.deployments(project, environment, limit)
    if as_json:
        print_json(found)
    else:
        from ciserver.client_render import console, deployments_table

        console().print(deployments_table(found))


def deployment(
    deployment_id: DeploymentId,
    follow: Annotated[
        bool,
        typer.Option(
            "--follow",
            "-f",
            help="Follow it live (weight, each step's requests and errors) until it ends; the exit "
            "status is then 0 only if it succeeded.",
        ),
    ] = False,
    as_json: Json = False,
    url: Url = DEFAULT_URL,
    token: Token = None,
) -> None:
    """Show a deployment: its status, weight, and each step's requests, errors and health."""
    with connected(url, token) as client:
        if follow:
            _follow(client, deployment_id, as_json=as_json)
            return
        found = client.deployment(deployment_id)
    if as_json:
        print_json(found)
        return
    from ciserver.client_render import console, deployment_view

    out = console()
    for part in deployment_view(found):
        out.print(part)


def _control(action: str, deployment_id: int, url: str, token: str | None) -> None:
    with connected(url, token) as client:
        found = client.control(deployment_id, action)
    from ciserver.client_text import field

    reason = f": {field(found['reason'], 300)}" if found.get("reason") else ""
    typer.echo(f"deployment {deployment_id} {action} asked; it is {found['status']}{reason}")


def pause(deployment_id: DeploymentId, url: Url = DEFAULT_URL, token: Token = None) -> None:
    """Pause a rollout between its checks; it keeps the weight it has."""
    _control("pause", deployment_id, url, token)


def resume(deployment_id: DeploymentId, url: Url = DEFAULT_URL, token: Token = None) -> None:
    """Resume a paused rollout from its step."""
    _control("resume", deployment_id, url, token)


def abort(deployment_id: DeploymentId, url: Url = DEFAULT_URL, token: Token = None) -> None:
    """Abort a rollout: all traffic back to the previous release."""
    _control("abort", deployment_id, url, token)


def _started(deployment_id: int, environment: str, what: str = "") -> None:
    typer.echo(
        f"deployment {deployment_id} of {what}to {environment} started; "
        f"follow it with: ciserver deployment {deployment_id} --follow"
    )


def _follow(client: Client, deployment_id: int, *, as_json: bool) -> None:
    from ciserver.client_render import console
    from ciserver.client_watch import follow_deployment

    status = follow_deployment(client, deployment_id, console(), as_json=as_json)
    if status != DeploymentStatus.succeeded.value:
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    """Add the release and deployment commands to the `ciserver` command."""
    for command in (environments, promote, rollback, deployments, deployment, pause, resume, abort):
        app.command(rich_help_panel=PANEL)(command)
