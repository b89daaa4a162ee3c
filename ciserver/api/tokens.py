"""API tokens: an admin hands out and revokes them."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, status

from ciserver.api.deps import Admin, DatabaseDep, RowId, not_found
from ciserver.api.schemas import TokenCreated, TokenIn, TokenOut
from ciserver.store import audit
from ciserver.store.models import Role
from ciserver.store.tokens import TokenError, create_token, expiry_in, list_tokens, revoke_token

router = APIRouter(prefix="/api/v1/tokens", tags=["tokens"])


@router.post(
    "", response_model=TokenCreated, status_code=status.HTTP_201_CREATED, summary="A new token, shown once"
)
def create(body: TokenIn, caller: Admin, db: DatabaseDep) -> TokenCreated:
    try:
        expires_at = None if body.expires_in is None else expiry_in(body.expires_in)
    except TokenError as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, f"expires_in: {exc}") from None
    with db.session() as session:
        token, secret = create_token(session, Role[body.role], body.name, expires_at)
        audit.record(session, caller.actor, "token.create", f"token:{token.id}", audit.token_detail(token))
        return TokenCreated(id=token.id, role=token.role, token=secret, expires_at=token.expires_at)


@router.get("", response_model=list[TokenOut], summary="Tokens (never their secrets)")
def tokens(_: Admin, db: DatabaseDep) -> list[TokenOut]:
    with db.session() as session:
        return [TokenOut.of(t) for t in list_tokens(session)]


@router.delete("/{token_id}", response_model=TokenOut, summary="Revoke a token")
def revoke(token_id: RowId, caller: Admin, db: DatabaseDep) -> TokenOut:
    with db.session() as session:
        token = revoke_token(session, token_id)
        if token is None:
            raise not_found("token", token_id)
        audit.record(session, caller.actor, "token.revoke", f"token:{token_id}")
        return TokenOut.of(token)
