"""`ciserver audit`: the audit log, read from the data dir's database directly, newest first.

What it prints is text others wrote (token names, targets): control characters are shown escaped, so
an entry cannot move the cursor or recolour the operator's terminal.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer

from ciserver.cli_common import data_dir_settings


def audit_log(
    limit: Annotated[int, typer.Option(min=1, max=10_000, help="How many entries, newest first.")] = 50,
    actor: Annotated[
        str | None, typer.Option(help="Only this actor, e.g. 'cli:root' or 'token:3 (ci)'.")
    ] = None,
    action: Annotated[str | None, typer.Option(help="Only this action, e.g. environment.promote.")] = None,
    target: Annotated[
        str | None, typer.Option(help="Only this thing and what is under it, e.g. project:acme/app.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON array, for scripts.")] = False,
) -> None:
    """Show the audit log: when, who (a token, or cli:USER), what, to which thing, and the detail.

    The same entries as GET /api/v1/audit (admin tokens), read here on the server's host."""
    from ciserver.store.audit import list_entries
    from ciserver.store.db import session_scope

    with session_scope(data_dir_settings().db_url) as session:
        entries, _total = list_entries(session, actor=actor, action=action, target=target, limit=limit)
        rows = [
            {
                "id": e.id,
                "at": e.at.isoformat(timespec="seconds"),
                "actor": e.actor,
                "action": e.action,
                "target": e.target,
                "detail": e.detail,
            }
            for e in entries
        ]
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    for row in rows:
        detail = "" if row["detail"] is None else json.dumps(row["detail"], sort_keys=True)
        fields = [row["at"], row["actor"], row["action"], row["target"], detail]
        typer.echo("\t".join(_printable(str(field)) for field in fields).rstrip("\t"))


def _printable(text: Any) -> str:
    """Control characters (and tabs, the column separator) as \\xNN escapes."""
    return "".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in str(text))
