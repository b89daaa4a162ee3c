"""The server's key against the database: a process whose key cannot read what the database holds
refuses to start, naming the setting, and a lost key file is never replaced by a new key."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.fernet import Fernet
from sqlalchemy import select

from ciserver import crypto
from ciserver.config import Settings
from ciserver.crypto import SecretKeyError, load_fernet
from ciserver.store.db import session_scope
from ciserver.store.key_check import open_server_key
from ciserver.store.models import Project
from ciserver.store.projects import add_project, get_project
from ciserver.store.secrets import set_secret

WEBHOOK_SECRET = "a-webhook-secret-of-some-length"


def data_dir_with_secrets(root: Path) -> Settings:
    """A data dir as a running server leaves it: a key file, a project and one job secret."""
    settings = Settings(data_dir=root / "data")
    fernet = open_server_key(settings)
    with session_scope(settings.db_url) as session:
        project = add_project(session, name="octo/app", forge="github", repo_url="https://x.test/a.git",
                              secret=WEBHOOK_SECRET, fernet=fernet)  # fmt: skip
        set_secret(session, project, "DEPLOY_TOKEN", "deploy-token-value", fernet)
    crypto._from_file.cache_clear()  # as a new process would read it
    return settings


def ciserver(settings: Settings, *args: str, stdin: str = "", **env: str) -> subprocess.CompletedProcess[str]:
    """`ciserver ARGS` as an operator runs it; a process that starts is stopped after 20 s."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("CISERVER_")}
    environment.update(
        CISERVER_DATA_DIR=str(settings.data_dir),
        CISERVER_REDIS_URL="redis://127.0.0.1:1/0",  # never reached: the key is checked first
        CISERVER_ROUTER_RELOAD="true",
        **env,
    )
    command = [sys.executable, "-m", "ciserver", *args]
    return subprocess.run(command, env=environment, capture_output=True, text=True, timeout=20, input=stdin)


def stored_webhook_secret(settings: Settings) -> str:
    with session_scope(settings.db_url) as session:
        return session.scalars(select(Project.secret)).one()


@pytest.mark.parametrize("command", [["serve", "--port", "1"], ["worker", "--burst"], ["up", "--port", "1"]])
def test_serve_worker_and_up_refuse_to_start_with_another_key(tmp_path: Path, command: list[str]) -> None:
    settings = data_dir_with_secrets(tmp_path)
    before = stored_webhook_secret(settings)
    result = ciserver(settings, *command, CISERVER_SECRET_KEY=Fernet.generate_key().decode())
    assert result.returncode == 2, result.stdout + result.stderr
    assert "CISERVER_SECRET_KEY is not the key the database's secrets were encrypted with" in result.stderr
    assert stored_webhook_secret(settings) == before, "nothing was re-encrypted"


@pytest.mark.parametrize(
    ("command", "stdin"),
    [
        (["serve", "--port", "1"], ""),
        (["worker", "--burst"], ""),
        (["up", "--port", "1"], ""),
        (["project", "add", "octo/two", "--repo", "https://x.test/t.git", "--forge", "github",
          "--secret", WEBHOOK_SECRET], ""),
        (["secret", "set", "octo/app", "OTHER"], "another-value"),
    ],
)  # fmt: skip
def test_a_lost_key_file_is_never_replaced_by_a_new_key(
    tmp_path: Path, command: list[str], stdin: str
) -> None:
    settings = data_dir_with_secrets(tmp_path)
    settings.secret_key_file.unlink()
    result = ciserver(settings, *command, stdin=stdin)
    assert result.returncode == 2, result.stdout + result.stderr
    assert f"{settings.secret_key_file} is missing" in result.stderr
    assert "CISERVER_SECRET_KEY" in result.stderr
    assert not settings.secret_key_file.exists(), "no new key was made"


def test_the_right_key_given_as_the_setting_starts(tmp_path: Path) -> None:
    settings = data_dir_with_secrets(tmp_path)
    key = settings.secret_key_file.read_text().strip()
    settings.secret_key_file.unlink()
    fernet = open_server_key(Settings(data_dir=settings.data_dir, secret_key=key))
    with session_scope(settings.db_url) as session:
        project = get_project(session, "octo/app")
        assert project is not None and fernet.decrypt(project.secret.encode()).decode() == WEBHOOK_SECRET
    assert not settings.secret_key_file.exists()


def test_a_database_from_before_the_key_check_is_checked_against_the_secrets_it_holds(tmp_path: Path) -> None:
    """An older release kept no key check: its job secrets (Fernet tokens) say which key is right."""
    settings = Settings(data_dir=tmp_path / "data")
    with session_scope(settings.db_url) as session:
        project = add_project(session, name="octo/app", forge="github", repo_url="https://x.test/a.git",
                              secret=WEBHOOK_SECRET, fernet=load_fernet(settings))  # fmt: skip
        set_secret(session, project, "DEPLOY_TOKEN", "deploy-token-value", load_fernet(settings))
    other = Settings(data_dir=settings.data_dir, secret_key=Fernet.generate_key().decode())
    with pytest.raises(SecretKeyError, match="CISERVER_SECRET_KEY is not the key"):
        open_server_key(other)
    open_server_key(settings)  # the key that reads them: accepted, and the check is written
    with pytest.raises(SecretKeyError, match="CISERVER_SECRET_KEY is not the key"):
        open_server_key(other)


def test_a_webhook_secret_sealed_with_another_key_is_not_taken_for_clear_text(tmp_path: Path) -> None:
    """Before, a value that did not decrypt was sealed again as if it were clear: lost for good."""
    settings = Settings(data_dir=tmp_path / "data")
    load_fernet(settings)  # this data dir's key file
    sealed = Fernet(Fernet.generate_key()).encrypt(WEBHOOK_SECRET.encode()).decode()  # another key's
    with session_scope(settings.db_url) as session:
        session.add(Project(name="octo/app", forge="github", repo_url="https://x.test/a.git", secret=sealed))
    with pytest.raises(SecretKeyError, match=rf"{settings.secret_key_file} is not the key"):
        open_server_key(settings)
    assert stored_webhook_secret(settings) == sealed


def test_a_new_data_dir_gets_a_key_and_its_check_at_first_start(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data")
    first = open_server_key(settings)
    crypto._from_file.cache_clear()
    again = open_server_key(settings)
    assert again.decrypt(first.encrypt(b"x")) == b"x"
    settings.secret_key_file.unlink()
    crypto._from_file.cache_clear()
    with pytest.raises(SecretKeyError, match="is missing"):
        open_server_key(settings)  # even with no secret set yet: the check itself is encrypted data
