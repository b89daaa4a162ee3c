"""What the `ciserver` command's parts share: how a refusal is printed, and the project argument."""

from __future__ import annotations

from typing import Annotated

import typer

ProjectArg = Annotated[str, typer.Argument(help="The project: OWNER/NAME (GitLab: GROUP/SUB/NAME).")]


def fail(message: str) -> typer.Exit:
    """`error: <message>` on stderr, in red on a terminal, and exit status 2 (raise what it returns)."""
    typer.secho(f"error: {message}", err=True, fg=typer.colors.RED)
    return typer.Exit(code=2)
