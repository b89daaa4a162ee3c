"""A push is recorded whole on every database: what PostgreSQL would refuse for its length (SQLite
keeps anything) is fitted before it is written, never a failed webhook."""

from __future__ import annotations

from sqlalchemy.orm import Session

from ciserver.store.builds import PushRecord, record_push
from tests.support.store import new_project


def test_a_push_whose_author_and_default_branch_overflow_their_columns_is_still_recorded(
    session: Session,
) -> None:
    push = PushRecord(
        ref="refs/heads/main", branch="main", tag=None, sha="b" * 40, before="a" * 40,
        message="m" * 100_000, author="A" * 300, changed_files=None, default_branch="d" * 2000,
    )  # fmt: skip
    build, new = record_push(session, new_project(session), push, forge="github", delivery_id="d-1")
    session.flush()
    session.expire_all()
    assert new
    assert (build.author, build.default_branch) == ("A" * 255, None)
    assert build.message == "m" * 100_000  # a commit message is kept whole
