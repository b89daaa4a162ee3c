"""The `ciserver` client commands for builds and jobs: builds, build, logs, watch, cancel, retry.

They talk HTTP to CISERVER_URL with CISERVER_TOKEN (see ciserver.client) and never open a data dir.
The HTTP client and the renderers are imported by the commands that use them, so that every other
`ciserver` command (worker, serve, token, ...) starts without loading them.
A refusal or an unreachable server is one `error:` line and exit status 2; `logs -f` and `watch` exit
1 when the job or build did not succeed, so a script can wait on them.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Annotated, Any

import typer

from ciserver.cli_common import fail
from ciserver.states import Status

if TYPE_CHECKING:
    from ciserver.client import Client

PANEL = "Client (talks HTTP to CISERVER_URL)"
DEFAULT_URL = "http://127.0.0.1:8080"

Url = Annotated[
    str,
    typer.Option("--url", envvar="CISERVER_URL", help="The server's address.", rich_help_panel="Connection"),
]
Token = Annotated[
    str | None,
    typer.Option(
        "--token",
        envvar="CISERVER_TOKEN",
        show_default=False,
        help="An API token (`ciserver token create`); prefer CISERVER_TOKEN, since `ps` shows arguments.",
        rich_help_panel="Connection",
    ),
]
Json = Annotated[bool, typer.Option("--json", help="Print the API's JSON as it is, for scripts.")]
BuildId = Annotated[int, typer.Argument(min=1, max=2**63 - 1, help="The build's id (`ciserver builds`).")]
JobId = Annotated[int, typer.Argument(min=1, max=2**63 - 1, help="The job's id (`ciserver build ID`).")]


@contextmanager
def connected(url: str, token: str | None) -> Iterator[Client]:
    """A client of the server; any ClientError becomes the one-line `error:` and exit status 2, and
    Ctrl-C a quiet exit 130."""
    from ciserver.client import Client, ClientError

    try:
        with Client(url, token) as client:
            yield client
    except ClientError as exc:
        raise fail(str(exc)) from None
    except KeyboardInterrupt:
        raise typer.Exit(130) from None


def print_json(value: Any) -> None:
    typer.echo(json.dumps(value, indent=2))


def builds(
    project: Annotated[str | None, typer.Option(help="Only this project's builds (OWNER/NAME).")] = None,
    branch: Annotated[str | None, typer.Option(help="Only builds of this branch.")] = None,
    status: Annotated[Status | None, typer.Option(help="Only builds in this state.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=500, help="How many, newest first.")] = 20,
    as_json: Json = False,
    url: Url = DEFAULT_URL,
    token: Token = None,
) -> None:
    """List builds, newest first: id, project, ref, sha, status, age, duration."""
    from ciserver.client_render import builds_table, console

    with connected(url, token) as client:
        found = client.builds(
            project=project, branch=branch, status=status.value if status else None, limit=limit
        )
    if as_json:
        print_json(found)
        return
    out = console()
    out.print(builds_table(found["items"]))
    if found["total"] > len(found["items"]):
        out.print(f"{len(found['items'])} of {found['total']} builds (--limit shows more)")


def build(build_id: BuildId, as_json: Json = False, url: Url = DEFAULT_URL, token: Token = None) -> None:
    """Show a build and its jobs by stage: status, duration, why a job waits or failed."""
    from ciserver.client_render import build_view, console

    with connected(url, token) as client:
        found = client.build(build_id)
    if as_json:
        print_json(found)
        return
    out = console()
    for part in build_view(found):
        out.print(part)


def logs(
    job_id: JobId,
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Follow the log live until the job ends.")
    ] = False,
    url: Url = DEFAULT_URL,
    token: Token = None,
) -> None:
    """Print a job's log; with -f, follow it live until the job ends.

    With -f the exit status is 0 only if the job succeeded (1 otherwise)."""
    from ciserver.client import LogEnd
    from ciserver.client_render import console
    from ciserver.client_text import log_text

    terminal = sys.stdout.isatty()
    colour = console().no_color is False

    def write(text: str) -> None:
        sys.stdout.write(log_text(text, colour=colour) if terminal else text)
        sys.stdout.flush()

    with connected(url, token) as client:
        if not follow:
            write(client.log(job_id).text)
            return
        status = None
        for item in client.follow_log(job_id):
            if isinstance(item, LogEnd):
                status = item.status
                break
            write(item)
    if status != Status.success.value:
        typer.secho(f"job {job_id} ended {status}", err=True, fg=typer.colors.RED)
        raise typer.Exit(1)


def watch(
    build_id: BuildId,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print each change of the build and its jobs as a JSON line.")
    ] = False,
    url: Url = DEFAULT_URL,
    token: Token = None,
) -> None:
    """Follow a build live until it ends: each job as it changes state, a progress bar on a terminal.

    It reads the server's event stream (no polling). The exit status is 0 only if the build succeeded
    (1 otherwise)."""
    from ciserver.client_render import console
    from ciserver.client_watch import watch_build

    with connected(url, token) as client:
        status = watch_build(client, build_id, console(), as_json=as_json)
    if status != Status.success.value:
        raise typer.Exit(1)


def cancel(build_id: BuildId, url: Url = DEFAULT_URL, token: Token = None) -> None:
    """Cancel a build: running jobs stop, queued ones never start (developer role)."""
    with connected(url, token) as client:
        found = client.cancel(build_id)
    typer.echo(f"build {build_id} {found['status']}")


def retry(build_id: BuildId, url: Url = DEFAULT_URL, token: Token = None) -> None:
    """Build the same commit again, as a new build (developer role); prints the new build's id."""
    with connected(url, token) as client:
        created = client.retry(build_id)
    new = created["build_id"]
    typer.echo(f"build {new} queued (a retry of build {build_id}); follow it with: ciserver watch {new}")


def register(app: typer.Typer) -> None:
    """Add the build and job commands to the `ciserver` command."""
    for command in (builds, build, logs, watch, cancel, retry):
        app.command(rich_help_panel=PANEL)(command)
