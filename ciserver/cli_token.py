"""`ciserver token`: create, list and revoke API tokens on the data dir's database directly.

Each write is in the audit log as the API's are, with the host's user as the actor.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated

import typer

from ciserver.cli_common import data_dir_settings, fail

token_app = typer.Typer(
    help="Create, list and revoke API tokens (works on the data dir's database directly).",
    no_args_is_help=True,
)


class RoleName(StrEnum):
    viewer = "viewer"
    developer = "developer"
    ops = "ops"
    admin = "admin"


def _date(moment: datetime) -> str:
    return moment.isoformat(timespec="seconds")


@token_app.command("create")
def token_create(
    role: Annotated[RoleName, typer.Option(help="viewer < developer < ops < admin")],
    name: Annotated[str, typer.Option(help="A label to tell tokens apart.")] = "",
    expires_in: Annotated[
        str | None,
        typer.Option(help="How long the token works: 30d, 12h, 90m or seconds (default: until revoked)."),
    ] = None,
) -> None:
    """Create an API token and print it, once, alone on the last line (only its hash is kept)."""
    from ciserver.store import audit
    from ciserver.store.db import session_scope
    from ciserver.store.models import Role
    from ciserver.store.tokens import TokenError, create_token, expiry_in

    try:
        expires_at = None if expires_in is None else expiry_in(expires_in)
    except TokenError as exc:
        raise fail(f"--expires-in: {exc}") from None
    with session_scope(data_dir_settings().db_url) as session:
        token, secret = create_token(session, Role[role.value], name, expires_at)
        audit.record(
            session, audit.cli_actor(), "token.create", f"token:{token.id}", audit.token_detail(token)
        )
        until = "" if expires_at is None else f", expires {_date(expires_at)}"
        typer.echo(f"token {token.id} ({token.role}) created{until}; it is shown only now:")
    typer.echo(secret)


@token_app.command("list")
def token_list() -> None:
    """List tokens: id, role, name, dates (never the secrets)."""
    from ciserver.store.db import session_scope
    from ciserver.store.tokens import list_tokens

    with session_scope(data_dir_settings().db_url) as session:
        for token in list_tokens(session):
            line = [str(token.id), token.role, token.name, f"created {_date(token.created_at)}"]
            line.append("never expires" if token.expires_at is None else f"expires {_date(token.expires_at)}")
            if token.revoked_at is not None:
                line.append(f"revoked {_date(token.revoked_at)}")
            typer.echo("\t".join(line))


@token_app.command("revoke")
def token_revoke(
    token_id: Annotated[int, typer.Argument(min=1, max=2**63 - 1, help="The id `token list` shows.")],
) -> None:
    """Revoke a token: from now on it gets 401."""
    from ciserver.store import audit
    from ciserver.store.db import session_scope
    from ciserver.store.tokens import revoke_token

    with session_scope(data_dir_settings().db_url) as session:
        if revoke_token(session, token_id) is None:
            raise fail(f"token {token_id} does not exist (see `ciserver token list`)")
        audit.record(session, audit.cli_actor(), "token.revoke", f"token:{token_id}")
    typer.echo(f"token {token_id} revoked")
