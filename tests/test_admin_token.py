"""The first admin token from CISERVER_ADMIN_TOKEN: recorded as a hash while no admin token exists,
never again once one did (so a revoke stays), refused when guessable, on both databases."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from ciserver.store.admin_token import ACTOR, AdminTokenError, record_admin_token
from ciserver.store.db import session_scope
from ciserver.store.models import AuditEntry, Role, Token
from ciserver.store.tokens import create_token, find_token, revoke_token

SECRET = "a" * 24 + "-first-admin-token-from-env"


def tokens(url: str) -> list[tuple[str, str]]:
    with session_scope(url) as session:
        return [(t.role, t.token_hash) for t in session.scalars(select(Token).order_by(Token.id))]


def test_the_environments_token_becomes_the_first_admin_token_kept_as_a_hash(database_url: str) -> None:
    with session_scope(database_url) as session:
        recorded = record_admin_token(session, SECRET)
        assert recorded is not None
    with session_scope(database_url) as session:
        found = find_token(session, SECRET)
        assert found is not None and found.role == Role.admin.name
        entries = [(e.actor, e.action) for e in session.scalars(select(AuditEntry))]
    assert entries == [(ACTOR, "token.create")]
    assert all(SECRET not in str(row) for row in tokens(database_url))


def test_a_restart_with_the_same_environment_records_nothing_more(database_url: str) -> None:
    for _ in range(2):
        with session_scope(database_url) as session:
            record_admin_token(session, SECRET)
    assert len(tokens(database_url)) == 1


def test_once_revoked_it_stays_revoked_across_restarts(database_url: str) -> None:
    with session_scope(database_url) as session:
        token = record_admin_token(session, SECRET)
        assert token is not None
        revoke_token(session, token.id)
    with session_scope(database_url) as session:
        assert record_admin_token(session, SECRET) is None
        assert find_token(session, SECRET) is None


def test_an_admin_made_otherwise_keeps_the_environments_token_out(database_url: str) -> None:
    with session_scope(database_url) as session:
        create_token(session, Role.admin)
    with session_scope(database_url) as session:
        assert record_admin_token(session, SECRET) is None
        assert find_token(session, SECRET) is None


def test_a_viewer_token_does_not_count_as_an_admin(database_url: str) -> None:
    with session_scope(database_url) as session:
        create_token(session, Role.viewer)
        assert record_admin_token(session, SECRET) is not None


@pytest.mark.parametrize("secret", ["short", "x" * 31, "with spaces " + "x" * 32, "tab\t" + "x" * 32])
def test_a_guessable_or_unprintable_token_is_refused(database_url: str, secret: str) -> None:
    with session_scope(database_url) as session, pytest.raises(AdminTokenError, match="CISERVER_ADMIN_TOKEN"):
        record_admin_token(session, secret)
    assert tokens(database_url) == []
