"""The first admin token from the environment (CISERVER_ADMIN_TOKEN), for servers nobody can run the
CLI beside before the first API call (docker-compose): `serve` records it at start, as a hash like
every token, while the database has no admin token at all.

"No admin token at all" counts revoked and expired ones: once any admin token was ever made, the
environment's is never recorded again, so revoking it (or the tokens made with it) stays revoked
however often the server restarts with the same .env."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from ciserver.store import audit
from ciserver.store.models import Role, Token
from ciserver.store.tokens import hash_token

MIN_LENGTH = 32  # `openssl rand -hex 32` gives 64; a token must not be guessable
NAME = "first admin (CISERVER_ADMIN_TOKEN)"
ACTOR = "env:CISERVER_ADMIN_TOKEN"


class AdminTokenError(ValueError):
    """CISERVER_ADMIN_TOKEN is not a token the server accepts."""


def check_admin_token(secret: str) -> None:
    if len(secret) < MIN_LENGTH:
        raise AdminTokenError(
            f"CISERVER_ADMIN_TOKEN must be at least {MIN_LENGTH} characters (e.g. `openssl rand -hex 32`)"
        )
    if not secret.isprintable() or any(ch.isspace() for ch in secret):
        raise AdminTokenError("CISERVER_ADMIN_TOKEN must be printable, without spaces")


def record_admin_token(session: Session, secret: str) -> Token | None:
    """Store `secret` as an admin token when no admin token exists; returns it, or None when one did."""
    check_admin_token(secret)
    if session.scalar(select(Token.id).where(Token.role == Role.admin.name).limit(1)) is not None:
        return None
    token = Token(name=NAME, role=Role.admin.name, token_hash=hash_token(secret))
    try:
        with session.begin_nested():  # two API processes starting at once: the second finds the hash
            session.add(token)
    except IntegrityError:
        return None
    audit.record(session, ACTOR, "token.create", f"token:{token.id}", audit.token_detail(token))
    return token
