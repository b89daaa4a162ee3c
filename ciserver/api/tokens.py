"""API tokens: an admin hands out and revokes them."""

from __future__ import annotations

from fastapi import APIRouter, status
from sqlalchemy import select

from ciserver.api.builds import not_found
from ciserver.api.deps import Admin, DatabaseDep, RowId
from ciserver.api.schemas import TokenCreated, TokenIn, TokenOut
from ciserver.store import audit
from ciserver.store.models import Role, Token, utcnow
from ciserver.store.tokens import create_token

router = APIRouter(prefix="/api/v1/tokens", tags=["tokens"])


@router.post(
    "", response_model=TokenCreated, status_code=status.HTTP_201_CREATED, summary="A new token, shown once"
)
def create(body: TokenIn, caller: Admin, db: DatabaseDep) -> TokenCreated:
    with db.session() as session:
        token, secret = create_token(session, Role[body.role], body.name)
        audit.record(session, caller.actor, "token.create", f"token:{token.id}", {"role": body.role})
        return TokenCreated(id=token.id, role=token.role, token=secret)


@router.get("", response_model=list[TokenOut], summary="Tokens (never their secrets)")
def tokens(_: Admin, db: DatabaseDep) -> list[TokenOut]:
    with db.session() as session:
        return [TokenOut.of(t) for t in session.scalars(select(Token).order_by(Token.id))]


@router.delete("/{token_id}", response_model=TokenOut, summary="Revoke a token")
def revoke(token_id: RowId, caller: Admin, db: DatabaseDep) -> TokenOut:
    with db.session() as session:
        token = session.get(Token, token_id)
        if token is None:
            raise not_found("token", token_id)
        token.revoked_at = token.revoked_at or utcnow()
        audit.record(session, caller.actor, "token.revoke", f"token:{token_id}")
        return TokenOut.of(token)
