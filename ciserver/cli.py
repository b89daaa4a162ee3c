"""The `ciserver` command: run the server (up, serve, worker), manage it (project, token, secret,
environment) and
help write pipelines (schema)."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

import typer

from ciserver import cli_client, cli_client_deploy, cli_push
from ciserver.cli_audit import audit_log
from ciserver.cli_common import ROOT, data_dir_settings, fail
from ciserver.cli_db import db_app
from ciserver.cli_environment import environment_app
from ciserver.cli_project import project_remove, project_update
from ciserver.cli_secret import secret_app
from ciserver.cli_token import token_app
from ciserver.config import Settings, get_settings
from ciserver.logging_setup import configure_logging

app = typer.Typer(
    help="ciserver: a self-hosted Git webhook CI/CD server. Start with `ciserver up`.",
    no_args_is_help=True,
    add_completion=False,
)
project_app = typer.Typer(
    help="Register, list, change and remove projects (works on the data dir's database directly)."
)
app.add_typer(project_app, name="project")
app.add_typer(token_app, name="token")
app.add_typer(secret_app, name="secret")
app.add_typer(environment_app, name="environment")
app.add_typer(db_app, name="db")
cli_client.register(app)  # the client commands: builds, build, logs, watch, cancel, retry
cli_client_deploy.register(app)  # environments, promote, rollback, deployments, deployment, pause, ...
cli_push.register(app)


@app.callback()
def _options(
    context: typer.Context,
    init: Annotated[
        bool,
        typer.Option(
            "--init",
            help="Let a command that works on the data dir (project, token, secret, environment, db, "
            "audit) create it when it does not exist; without it they refuse, naming the path. `up` "
            "and `serve` create theirs anyway.",
        ),
    ] = False,
) -> None:
    """ciserver: a self-hosted Git webhook CI/CD server. Start with `ciserver up`."""
    ROOT.init, ROOT.command = init, context.invoked_subcommand


Host = Annotated[str, typer.Option(help="Address to listen on; keep it on loopback behind a proxy.")]
Port = Annotated[int, typer.Option(help="Port of the HTTP API and webhooks.")]


class ForgeName(StrEnum):
    github = "github"
    gitlab = "gitlab"
    gitea = "gitea"  # Forgejo too


def _check_server_key(settings: Settings) -> None:
    """Refuse to start with a key that cannot read the database's secrets (see store.key_check), or on
    a database an earlier release made until `ciserver db upgrade` has run (see store.schema)."""
    from ciserver.crypto import SecretKeyError
    from ciserver.store.key_check import open_server_key
    from ciserver.store.schema import SchemaOutOfDate

    try:
        open_server_key(settings)
    except (SecretKeyError, SchemaOutOfDate) as exc:
        raise fail(str(exc)) from None


def _record_admin_token(db_url: str, secret: str) -> None:
    """CISERVER_ADMIN_TOKEN becomes the first admin token (ciserver.store.admin_token)."""
    from ciserver.store.admin_token import AdminTokenError, record_admin_token
    from ciserver.store.db import session_scope

    try:
        with session_scope(db_url) as session:
            token = record_admin_token(session, secret)
            recorded = None if token is None else token.id
    except AdminTokenError as exc:
        raise fail(str(exc)) from None
    if recorded is not None:
        typer.echo(f"ciserver: admin token {recorded} recorded from CISERVER_ADMIN_TOKEN", err=True)


@app.command()
def up(
    host: Host = "127.0.0.1",
    port: Port = 8080,
    workers: Annotated[int, typer.Option(min=1, help="How many workers run jobs at once.")] = 2,
) -> None:
    """Run everything on this host: a private Redis (unless CISERVER_REDIS_URL is set), the API and N workers.

    Data lives in CISERVER_DATA_DIR (default ./.ciserver); what its processes print, in its
    process-logs/ (job logs are read through the API). Ctrl-C or SIGTERM stops every child, but not
    deployed services: they keep running (`ciserver environment stop` takes one down).
    Prints a line for each build created, started and ended, each job end and each deployment step.
    Like serve and worker, refuses to start when the server's key (CISERVER_SECRET_KEY, or the data
    dir's secret.key) cannot read the secrets the database holds.
    """
    from ciserver.supervisor import StartError, Supervisor

    settings = get_settings()
    _check_server_key(settings)
    try:
        raise typer.Exit(Supervisor(settings, host, port, workers).run())
    except StartError as exc:
        raise fail(str(exc)) from None


@app.command()
def serve(host: Host = "127.0.0.1", port: Port = 8080) -> None:
    """Run the HTTP API alone (scale-out: against CISERVER_REDIS_URL and CISERVER_DATABASE_URL).

    Logs to stderr, as JSON lines with CISERVER_LOG_FORMAT=json; /metrics serves Prometheus."""
    import uvicorn

    from ciserver.app import create_app

    settings = get_settings()
    if not settings.redis_url:
        raise fail("CISERVER_REDIS_URL is not set (or use `ciserver up`, which starts its own Redis)")
    _check_server_key(settings)
    if settings.admin_token:
        _record_admin_token(settings.db_url, settings.admin_token)
    configure_logging(settings.log_format)
    # log_config=None: uvicorn's loggers propagate to the root handler above, in CISERVER_LOG_FORMAT.
    uvicorn.run(
        create_app(settings),
        host=host,
        port=port,
        log_level="info",
        log_config=None,
        timeout_graceful_shutdown=5,
    )


@app.command()
def worker(
    queues: Annotated[
        list[str] | None,
        typer.Option(
            "--queues", "-q", help="Queues to take work from: builds, jobs, deploys (default: all three)."
        ),
    ] = None,
    burst: Annotated[bool, typer.Option(help="Stop when the queues are empty.")] = False,
    grace: Annotated[
        float | None,
        typer.Option(
            min=0,
            help="Seconds a SIGTERM lets the current task run on before it is handed back to the queue "
            "(default: CISERVER_STOP_GRACE, 10).",
        ),
    ] = None,
    router: Annotated[
        bool,
        typer.Option(
            "--router",
            help="Run the private nginx that deployments shift traffic with (under the data dir, as "
            "`up` does) for as long as this worker runs: the deploy worker of docker-compose.yml.",
        ),
    ] = False,
) -> None:
    """Run one worker: plans builds, runs jobs in containers, rolls out deployments.

    SIGTERM: no new task; the current one runs on for the grace period, then is handed back.
    A worker killed outright is found by the others within CISERVER_WORKER_TTL seconds.
    Logs to stderr, as JSON lines with CISERVER_LOG_FORMAT=json."""
    from workers.runner import run_worker

    settings = get_settings()
    if grace is not None:
        settings = settings.model_copy(update={"stop_grace": grace})
    if not settings.redis_url:
        raise fail("CISERVER_REDIS_URL is not set (or use `ciserver up`, which starts its own Redis)")
    _check_server_key(settings)
    configure_logging(settings.log_format)
    if not router:
        run_worker(settings, queues or None, burst=burst)
        return
    from ciserver.worker_router import WorkerRouterError, running_router

    try:
        with running_router(settings) as settings:
            run_worker(settings, queues or None, burst=burst)
    except WorkerRouterError as exc:
        raise fail(str(exc)) from None


@project_app.command("add")
def project_add(
    name: Annotated[
        str, typer.Argument(help="The forge's repository path: OWNER/NAME (GitLab: GROUP/SUB/NAME).")
    ],
    repo: Annotated[
        str,
        typer.Option(
            envvar="CISERVER_PROJECT_REPO",
            help="Clone URL (https or ssh; a path with CISERVER_ALLOW_LOCAL_REPOS). Credentials in an "
            "https URL are kept encrypted: give such a URL in CISERVER_PROJECT_REPO, since `ps` shows "
            "a command's arguments.",
        ),
    ],
    forge: Annotated[ForgeName, typer.Option(help="Which forge sends its webhooks.")],
    secret: Annotated[
        str,
        typer.Option(
            prompt=True,
            hide_input=True,
            help="Webhook secret (GitHub, Gitea) or secret token (GitLab), at least 16 characters.",
        ),
    ],
    auto_cancel: Annotated[
        bool | None,
        typer.Option(
            "--auto-cancel/--no-auto-cancel",
            help="On a new push, cancel older unfinished builds of its branch (not on the default one).",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Register a project, so its forge's webhooks are accepted and built; prints its webhook path."""
    from ciserver.clone_urls import CloneURLError, check_clone_url
    from ciserver.crypto import SecretKeyError
    from ciserver.store import audit
    from ciserver.store.db import session_scope
    from ciserver.store.key_check import open_server_key
    from ciserver.store.projects import ProjectError, add_project, check_webhook_secret, webhook_path

    settings = data_dir_settings()
    try:
        url = check_clone_url(repo, allow_local=settings.allow_local_repos)
        check_webhook_secret(secret)
        fernet = open_server_key(settings)
        with session_scope(settings.db_url) as session:
            project = add_project(
                session,
                name=name,
                forge=forge.value,
                repo_url=url,
                secret=secret,
                fernet=fernet,
                auto_cancel=auto_cancel,
            )
            audit.record(
                session,
                audit.cli_actor(),
                "project.create",
                f"project:{project.name}",
                {"forge": forge.value},
            )
            typer.echo(
                f"project {project.name} added; point its {forge.value} webhook at "
                f"https://<this server>{webhook_path(project)} (with the same secret)"
            )
    except (CloneURLError, ProjectError, SecretKeyError) as exc:
        raise fail(str(exc)) from None


@project_app.command("list")
def project_list() -> None:
    """List registered projects."""
    from ciserver.store.clone_credentials import shown_repo_url
    from ciserver.store.db import session_scope
    from ciserver.store.projects import list_projects

    with session_scope(data_dir_settings().db_url) as session:
        for project in list_projects(session):
            typer.echo(f"{project.name}\t{project.forge}\t{shown_repo_url(project)}")


project_app.command("update")(project_update)
project_app.command("remove")(project_remove)


app.command("audit")(audit_log)


@app.command()
def schema(
    markdown: Annotated[
        bool, typer.Option("--markdown", help="Print the reference page (docs/PIPELINE.md) made from it.")
    ] = False,
) -> None:
    """Print the JSON Schema of pipelines.yml, for editors to validate and complete the file."""
    import json

    from ciserver.pipeline.reference import pipeline_reference
    from ciserver.pipeline.schema import pipeline_json_schema

    if markdown:
        typer.echo(pipeline_reference(), nl=False)
        return
    typer.echo(json.dumps(pipeline_json_schema(), indent=2))


@app.command()
def version() -> None:
    """Print the version."""
    from ciserver import __version__

    typer.echo(__version__)


def main() -> None:
    """The `ciserver` command: any sub-command that opens the database refuses an out-of-date schema
    with the same one-line error as `up` does, not a traceback."""
    from ciserver.store.schema import SchemaOutOfDate

    try:
        app()
    except SchemaOutOfDate as exc:
        raise SystemExit(fail(str(exc)).exit_code) from None
