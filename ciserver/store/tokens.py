"""API tokens: random secrets handed out once, kept only as SHA-256 hashes, living until revoked or
until the expiry they were given."""

from __future__ import annotations

import hashlib
import secrets
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from ciserver.store.models import Role, Token, utcnow
from ciserver.units import parse_duration

PREFIX = "cis_"
MAX_LIFETIME = timedelta(days=3650)


class TokenError(ValueError):
    """A token request the server refuses; the caller prefixes the field it came from."""


def expiry_in(lifetime: Any) -> datetime:
    """When a token made now for `lifetime` ("30d", "12h", "90m" or seconds) expires."""
    try:
        seconds = parse_duration(lifetime)
    except (ValueError, TypeError) as exc:
        raise TokenError(str(exc)) from None
    if seconds < 1:
        raise TokenError("must be at least 1s (leave it out for a token that lives until revoked)")
    if seconds > MAX_LIFETIME.total_seconds():
        raise TokenError(f"must be at most {MAX_LIFETIME.days}d")
    return utcnow() + timedelta(seconds=seconds)


def hash_token(token: str) -> str:
    # A token carries 256 random bits, so a plain hash is as strong as a slow one and lets the
    # lookup be an index probe on the hash, never a comparison with a stored secret.
    return hashlib.sha256(token.encode()).hexdigest()


def create_token(
    session: Session, role: Role, name: str = "", expires_at: datetime | None = None
) -> tuple[Token, str]:
    """Store a new token of `role`; returns it with its secret, which is never stored or shown again."""
    secret = PREFIX + secrets.token_urlsafe(32)
    token = Token(
        name=name or f"{role.name} token",
        role=role.name,
        token_hash=hash_token(secret),
        expires_at=expires_at,
    )
    session.add(token)
    session.flush()
    return token, secret


def find_token(session: Session, token: str) -> Token | None:
    """The live token matching `token`, or None when unknown, revoked or expired."""
    found = session.scalar(select(Token).where(Token.token_hash == hash_token(token)))
    if found is None or found.revoked_at is not None:
        return None
    if found.expires_at is not None and found.expires_at <= utcnow():
        return None
    return found


def revoke_token(session: Session, token_id: int) -> Token | None:
    """Revoke a token (a second revoke keeps the first date); None if there is no such token."""
    token = session.get(Token, token_id)
    if token is not None:
        token.revoked_at = token.revoked_at or utcnow()
    return token


def list_tokens(session: Session) -> list[Token]:
    return list(session.scalars(select(Token).order_by(Token.id)))
