"""Projects: a forge repository path, where to clone it from and the webhook secret (encrypted)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import urlsplit

from cryptography.fernet import Fernet, InvalidToken
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from ciserver.crypto import SecretKeyError, is_fernet_token
from ciserver.store.clone_credentials import seal_clone_url
from ciserver.store.models import Project
from ciserver.store.statuses import seal_forge_token

FORGE_NAMES = ("github", "gitlab", "gitea")  # gitea: Forgejo too
# A secret someone can guess lets them sign pushes; GitHub's own examples use 32 random bytes.
MIN_WEBHOOK_SECRET = 16
_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*(/[A-Za-z0-9_][A-Za-z0-9_.-]*)+$")


class ProjectError(ValueError):
    """A registration the server refuses; the message names the field."""


class ProjectExists(ProjectError):
    """A project of that name is registered already (a conflict, not a mistake in the request)."""


def check_project_name(name: str) -> str:
    """The forge's repository path: OWNER/NAME, or GROUP/SUBGROUP/NAME on GitLab."""
    if len(name) > 255 or not _NAME.match(name) or name.endswith(".git"):
        raise ProjectError(f"name: {name!r} is not a repository path like OWNER/NAME")
    return name


def check_webhook_secret(secret: str) -> str:
    """A secret long enough to register (projects registered before the rule keep theirs)."""
    if len(secret) < MIN_WEBHOOK_SECRET:
        raise ProjectError(
            f"secret: must be at least {MIN_WEBHOOK_SECRET} characters (it signs the forge's webhooks; "
            "make one with `openssl rand -hex 32`)"
        )
    return secret


def webhook_path(project: Project) -> str:
    """Where the project's forge sends its webhooks: only its own secret is tried there."""
    return f"/webhooks/{project.forge}/{project.name}"


def add_project(
    session: Session,
    *,
    name: str,
    forge: str,
    repo_url: str,
    secret: str,
    fernet: Fernet,
    auto_cancel: bool | None = None,
) -> Project:
    """Register a project; the caller has already checked `repo_url` (see ciserver.clone_urls)."""
    check_project_name(name)
    if forge not in FORGE_NAMES:
        raise ProjectError(f"forge: {forge!r} is not one of {', '.join(FORGE_NAMES)}")
    if not secret:
        raise ProjectError("secret: must not be empty (it signs the forge's webhooks)")
    if get_project(session, name) is not None:
        raise ProjectExists(f"name: project {name!r} already exists")
    sealed = fernet.encrypt(secret.encode()).decode()
    project = Project(name=name, forge=forge, repo_url=repo_url, secret=sealed, auto_cancel=auto_cancel)
    seal_clone_url(project, fernet)
    session.add(project)
    session.flush()
    return project


def webhook_secret(project: Project, fernet: Fernet) -> str:
    """The project's webhook secret, kept encrypted with the server's key (as its job secrets are)."""
    try:
        return fernet.decrypt(project.secret.encode()).decode()
    except InvalidToken:
        raise SecretKeyError(
            f"the server's secret key cannot read the webhook secret of {project.name}: was "
            "CISERVER_SECRET_KEY or secret.key changed?"
        ) from None


def seal_clear_webhook_secrets(session: Session, fernet: Fernet) -> list[str]:
    """Encrypt the webhook secrets earlier releases kept in clear; returns those projects' names.

    A stored value is clear text when it does not have a Fernet token's shape. One with that shape is
    never taken for clear text, even when this key cannot read it: sealing it again would lose it.
    """
    sealed = []
    for project in session.scalars(select(Project)):
        if not is_fernet_token(project.secret):
            project.secret = fernet.encrypt(project.secret.encode()).decode()
            sealed.append(project.name)
    return sealed


# Which forges have no public instance: their API URL must be given with a token.
FORGES_WITHOUT_PUBLIC_API = ("gitea",)
MAX_FORGE_TOKEN = 4096


@dataclass(frozen=True)
class Unset:
    """A field a PATCH left out (None is a value there: "clear it")."""


UNSET = Unset()


def check_forge_api_url(url: str) -> str:
    """An http(s) base URL with a host and nothing a request could be confused by."""
    parts = urlsplit(url)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise ProjectError(
            f"forge_url: {url[:200]!r} is not an http(s) URL such as https://gitea.example/api/v1"
        )
    if parts.username is not None or parts.password is not None:
        raise ProjectError("forge_url: must not hold credentials; give the token on its own")
    if parts.query or parts.fragment or len(url) > 2048:
        raise ProjectError(
            "forge_url: must be a base URL without a query or fragment, at most 2048 characters"
        )
    return url.rstrip("/")


def update_project(
    session: Session,
    project: Project,
    fernet: Fernet,
    *,
    secret: str | Unset = UNSET,
    repo_url: str | Unset = UNSET,
    forge_api_url: str | Unset | None = UNSET,
    forge_token: str | Unset | None = UNSET,
    auto_cancel: bool | Unset | None = UNSET,
) -> list[str]:
    """Change what is given (the caller has checked `repo_url`); returns the names of the fields changed,
    which is what the audit log records (never a value: two of them are secrets)."""
    changed = []
    if not isinstance(secret, Unset):
        project.secret = fernet.encrypt(check_webhook_secret(secret).encode()).decode()
        changed.append("secret")
    if not isinstance(repo_url, Unset):
        project.repo_url, project.repo_credentials = repo_url, None
        seal_clone_url(project, fernet)
        changed.append("repo")
    if not isinstance(forge_api_url, Unset):
        project.forge_api_url = None if forge_api_url is None else check_forge_api_url(forge_api_url)
        changed.append("forge_url")
    if not isinstance(forge_token, Unset):
        if forge_token is not None and not (0 < len(forge_token) <= MAX_FORGE_TOKEN):
            raise ProjectError(f"forge_token: must be 1 to {MAX_FORGE_TOKEN} characters")
        if forge_token is not None and any(ch.isspace() or not ch.isprintable() for ch in forge_token):
            raise ProjectError("forge_token: must not contain spaces or control characters")
        project.forge_token = None if forge_token is None else seal_forge_token(forge_token, fernet)
        changed.append("forge_token")
    if not isinstance(auto_cancel, Unset):
        project.auto_cancel = auto_cancel
        changed.append("auto_cancel")
    no_default = project.forge in FORGES_WITHOUT_PUBLIC_API
    if project.forge_token is not None and project.forge_api_url is None and no_default:
        raise ProjectError(
            f"forge_url: required with a forge token on {project.forge} (such as "
            "https://gitea.example/api/v1): it has no public instance to default to"
        )
    session.flush()
    return changed


def get_project(session: Session, name: str) -> Project | None:
    """By repository path, ignoring case as GitHub and GitLab do (`Octo/Hello` is `octo/hello`)."""
    return session.scalar(select(Project).where(func.lower(Project.name) == name.lower()))


def projects_named(session: Session, names: list[str]) -> list[Project]:
    """The projects among `names` (ignoring case), in one query (none for no names)."""
    if not names:
        return []
    wanted = [name.lower() for name in names]
    return list(session.scalars(select(Project).where(func.lower(Project.name).in_(wanted))))


def list_projects(session: Session) -> list[Project]:
    return list(session.scalars(select(Project).order_by(Project.name)))
