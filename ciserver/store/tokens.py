"""API tokens: random secrets handed out once, kept only as SHA-256 hashes."""

from __future__ import annotations

import hashlib
import secrets

from sqlalchemy import select
from sqlalchemy.orm import Session

from ciserver.store.models import Role, Token, utcnow

PREFIX = "cis_"


def hash_token(token: str) -> str:
    # A token carries 256 random bits, so a plain hash is as strong as a slow one and lets the
    # lookup be an index probe on the hash, never a comparison with a stored secret.
    return hashlib.sha256(token.encode()).hexdigest()


def create_token(session: Session, role: Role, name: str = "") -> tuple[Token, str]:
    """Store a new token of `role`; returns it with its secret, which is never stored or shown again."""
    secret = PREFIX + secrets.token_urlsafe(32)
    token = Token(name=name or f"{role.name} token", role=role.name, token_hash=hash_token(secret))
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
