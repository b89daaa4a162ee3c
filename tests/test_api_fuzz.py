"""Schemathesis over the OpenAPI schema: whatever a client sends, within or outside the schema,
no answer is a 500 (a forge would disable its hook; a user would get no reason).

The app runs in-process on a data dir of its own. Its Redis URL points at a closed port, so the
calls that need the queue answer 503 (the documented "try again"), which is allowed here.
"""

from __future__ import annotations

import atexit
import shutil
import tempfile
from pathlib import Path

import schemathesis
from hypothesis import HealthCheck, settings

from ciserver.app import create_app
from ciserver.config import Settings
from ciserver.store.db import session_scope
from ciserver.store.models import Role
from ciserver.store.projects import add_project
from tests.support.store import bearer, fernet_of

DATA = Path(tempfile.mkdtemp(prefix="ciserver-fuzz-"))
atexit.register(shutil.rmtree, DATA, ignore_errors=True)
CONFIG = Settings(data_dir=DATA, redis_url="redis://127.0.0.1:1/0")
with session_scope(CONFIG.db_url) as _session:
    add_project(
        _session,
        name="octo/app",
        forge="github",
        repo_url="https://x.test/a.git",
        secret="s",
        fernet=fernet_of(_session),
    )
HEADERS = bearer(CONFIG, Role.admin)

schema = schemathesis.openapi.from_asgi("/openapi.json", create_app(CONFIG, outbox=False))


@schema.parametrize()
@settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_request_gets_a_500(case: schemathesis.Case) -> None:
    response = case.call(headers=HEADERS)
    assert response.status_code < 500 or response.status_code == 503, (
        f"{case.method} {case.formatted_path} -> {response.status_code}: {response.text[:300]}"
    )
