"""What the routers share: settings, database sessions, Redis, who is calling and what they may do, the
404 for a missing row, and handing a deployment to a worker."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Annotated

from cryptography.fernet import Fernet
from fastapi import Depends, HTTPException, Path, Request, Security, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from redis import Redis
from redis.exceptions import RedisError
from sqlalchemy.orm import Session
from starlette.convertors import Convertor, register_url_convertor

from ciserver import queue
from ciserver.config import Settings
from ciserver.crypto import SecretKeyError, load_fernet
from ciserver.store.db import session_scope
from ciserver.store.environments import find, promote_role
from ciserver.store.models import Project, Role
from ciserver.store.projects import get_project
from ciserver.store.tokens import find_token
from ciserver.web.session import CSRF_HEADER, SAFE_METHODS, csrf_ok, session_token


def get_settings(request: Request) -> Settings:
    return request.app.state.settings


SettingsDep = Annotated[Settings, Depends(get_settings)]


@dataclass(frozen=True)
class Database:
    """Opens short transactions; endpoints commit before they answer, so a reader sees the write."""

    url: str

    def session(self) -> AbstractContextManager[Session]:
        return session_scope(self.url)


def get_database(settings: SettingsDep) -> Database:
    return Database(settings.db_url)


DatabaseDep = Annotated[Database, Depends(get_database)]


def get_redis(settings: SettingsDep) -> Redis:
    if not settings.redis_url:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, "CISERVER_REDIS_URL is not set")
    return queue.connect(settings.redis_url)


RedisDep = Annotated[Redis, Depends(get_redis)]


@dataclass(frozen=True)
class Caller:
    """The holder of the token a request carried."""

    token_id: int
    name: str
    role: Role

    @property
    def actor(self) -> str:
        return f"token:{self.token_id} ({self.name})"


_bearer = HTTPBearer(auto_error=False, description="An API token from `ciserver token create`.")


def caller_of(db: Database, secret: str) -> Caller | None:
    """The holder of the API token `secret`, if it is known, unrevoked and unexpired."""
    with db.session() as session:
        token = find_token(session, secret)
        return Caller(token.id, token.name, Role[token.role]) if token is not None else None


def require(role: Role) -> Callable[..., Caller]:
    """A dependency that admits tokens of `role` or above: 401 without a valid token, 403 below it.

    The token comes as a bearer token or in the dashboard's session cookie; a write made with the
    cookie must also carry the session's CSRF token in the X-CSRF-Token header (403 without it), since
    a browser sends the cookie whoever made the page that asks."""

    def check(
        request: Request,
        db: DatabaseDep,
        # The role as the bearer scheme's scope: the OpenAPI document (and docs/API.md) shows it per route.
        credentials: HTTPAuthorizationCredentials | None = Security(_bearer, scopes=[role.name]),
    ) -> Caller:
        cookie = session_token(request) if credentials is None else None
        if cookie is not None:
            if request.method not in SAFE_METHODS and not csrf_ok(cookie, request.headers.get(CSRF_HEADER)):
                raise HTTPException(
                    status.HTTP_403_FORBIDDEN,
                    f"{CSRF_HEADER}: a write signed in by the dashboard's cookie needs its CSRF token",
                )
            secret = cookie
        elif credentials is None or credentials.scheme.lower() != "bearer":
            raise _unauthorized("Authorization: a bearer token is required")
        else:
            secret = credentials.credentials
        caller = caller_of(db, secret)
        if caller is None:
            raise _unauthorized("Authorization: the token is unknown, revoked or expired")
        if caller.role < role:
            raise HTTPException(
                status.HTTP_403_FORBIDDEN,
                f"this needs the {role.name} role; the token has {caller.role.name}",
            )
        return caller

    return check


def _unauthorized(message: str) -> HTTPException:
    return HTTPException(status.HTTP_401_UNAUTHORIZED, message, headers={"WWW-Authenticate": "Bearer"})


Viewer = Annotated[Caller, Depends(require(Role.viewer))]
Developer = Annotated[Caller, Depends(require(Role.developer))]
Ops = Annotated[Caller, Depends(require(Role.ops))]
Admin = Annotated[Caller, Depends(require(Role.admin))]


# Ids and offsets: numbers the database can hold, so a huge one is a 422, not a driver error.
MAX_ROW = 2**63 - 1
RowId = Annotated[int, Path(ge=1, le=MAX_ROW, description="The numeric id.")]


class _RepoPath(Convertor[str]):
    """OWNER/NAME or deeper: at least one slash, so `/projects/o/secrets` stays project `o/secrets`."""

    regex = r"[^/]+(?:/[^/]+)+"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


register_url_convertor("repo_path", _RepoPath())


def server_fernet(settings: Settings) -> Fernet:
    """The key that encrypts secrets at rest; 503 naming the setting when it is broken."""
    try:
        return load_fernet(settings)
    except SecretKeyError as exc:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, str(exc)) from None


def not_found(what: str, ident: object) -> HTTPException:
    return HTTPException(status.HTTP_404_NOT_FOUND, f"{what} {ident} does not exist")


def project_or_404(session: Session, name: str) -> Project:
    """The project named OWNER/NAME, or the 404 that names it."""
    found = get_project(session, name)
    if found is None:
        raise not_found("project", repr(name))
    return found


def require_promote_role(session: Session, caller: Caller, project_id: int, environment: str) -> None:
    """403 unless the caller has the environment's promote role (ops unless its rules say otherwise)."""
    needed = promote_role(find(session, project_id, environment))
    if caller.role < needed:
        raise HTTPException(
            status.HTTP_403_FORBIDDEN,
            f"deployments of environment {environment!r} need the {needed.name} role "
            f"(its promote_role); the token has {caller.role.name}",
        )


def enqueue_deployment(settings: Settings, deployment_id: int) -> None:
    """Hand the deployment to a worker now if Redis answers; it is recorded either way."""
    if not settings.redis_url:
        return
    try:
        queue.enqueue_deployments(queue.connect(settings.redis_url), [deployment_id])
    except RedisError:
        pass  # recorded as pending: the outbox enqueues it once Redis answers
