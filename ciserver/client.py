"""The CLI client's HTTP side: the API's routes as methods, its streams as iterators, and every way a
request can go wrong as one `ClientError` whose message says what to do.

It talks to a server over HTTP only (CISERVER_URL, CISERVER_TOKEN): it never opens a data dir, so it
works from any directory and any host. Streams reconnect where they left off (Last-Event-ID), as a
browser's EventSource does, so a restarted API or a dropped connection loses nothing.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx
from httpx_sse import ServerSentEvent, connect_sse

API = "/api/v1"
# The server sends a keep-alive every 15 s on its streams: a longer silence is a dead connection.
STREAM_READ_TIMEOUT = 45.0
# How long a stream keeps trying to reconnect before it says the server is gone.
RECONNECT_FOR = 30.0


class ClientError(Exception):
    """A request that could not be made or was refused; `str()` is the one line to show."""


@dataclass(frozen=True)
class LogPage:
    """A job's log from an offset: the text, where to read on from, whether the job has ended."""

    text: str
    offset: int
    complete: bool


@dataclass(frozen=True)
class StreamOpened:
    """The event stream is (again) connected: what happened before now is for the caller to read from
    the API, what happens from now on comes as events."""


@dataclass(frozen=True)
class LogEnd:
    """The last item of a followed log: the job's final status."""

    status: str | None


def path_of(name: str) -> str:
    """A project name (OWNER/NAME) or environment as URL path segments, each one percent-encoded."""
    return "/".join(quote(part, safe="") for part in name.split("/"))


class Client:
    """One server's API, authenticated with a bearer token (none: only the webhooks can be used)."""

    def __init__(self, url: str, token: str | None, *, transport: httpx.BaseTransport | None = None) -> None:
        self.url = url.rstrip("/")
        self.token = token
        headers = {"User-Agent": "ciserver-cli"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        try:
            self._http = httpx.Client(base_url=self.url, headers=headers, timeout=30, transport=transport)
        except (httpx.InvalidURL, ValueError) as exc:
            raise ClientError(f"--url / CISERVER_URL: {url!r} is not a URL ({exc})") from None

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_: object) -> None:
        self._http.close()

    # Builds and jobs

    def builds(
        self, *, project: str | None, branch: str | None, status: str | None, limit: int
    ) -> dict[str, Any]:
        params = {"project": project, "branch": branch, "status": status, "limit": limit}
        return self._json("GET", "/builds", params={k: v for k, v in params.items() if v is not None})

    def build(self, build_id: int) -> dict[str, Any]:
        return self._json("GET", f"/builds/{build_id}")

    def job(self, job_id: int) -> dict[str, Any]:
        return self._json("GET", f"/jobs/{job_id}")

    def cancel(self, build_id: int) -> dict[str, Any]:
        return self._json("POST", f"/builds/{build_id}/cancel")

    def retry(self, build_id: int) -> dict[str, Any]:
        return self._json("POST", f"/builds/{build_id}/retry")

    def log(self, job_id: int, offset: int = 0) -> LogPage:
        response = self._send("GET", f"/jobs/{job_id}/log", params={"offset": offset})
        next_offset = int(response.headers.get("X-Log-Offset", offset + len(response.content)))
        complete = response.headers.get("X-Log-Complete") == "true"
        return LogPage(response.text, next_offset, complete)

    def follow_log(self, job_id: int) -> Iterator[str | LogEnd]:
        """The job's log as it is written, from its start, then a LogEnd once the job has ended."""
        for event in self._stream(f"/jobs/{job_id}/log/stream", {}):
            if isinstance(event, StreamOpened):
                continue
            if event.event == "log":
                yield event.json()["text"]
            elif event.event == "end":
                yield LogEnd(event.json().get("status"))
                return

    # Releases and deployments

    def environments(self, project: str) -> list[dict[str, Any]]:
        return self._json("GET", f"/projects/{path_of(project)}/environments")

    def promote(self, project: str, environment: str, build_id: int) -> dict[str, Any]:
        where = f"/projects/{path_of(project)}/environments/{path_of(environment)}/promote"
        return self._json("POST", where, json={"build_id": build_id})

    def rollback(self, project: str, environment: str) -> dict[str, Any]:
        where = f"/projects/{path_of(project)}/environments/{path_of(environment)}/rollback"
        return self._json("POST", where)

    def deployments(self, project: str, environment: str | None, limit: int) -> list[dict[str, Any]]:
        params: dict[str, Any] = {"project": project, "limit": limit}
        if environment is not None:
            params["environment"] = environment
        return self._json("GET", "/deployments", params=params)

    def deployment(self, deployment_id: int) -> dict[str, Any]:
        return self._json("GET", f"/deployments/{deployment_id}")

    def control(self, deployment_id: int, action: str) -> dict[str, Any]:
        """pause, resume or abort a deployment."""
        return self._json("POST", f"/deployments/{deployment_id}/{action}")

    # The event stream and webhooks

    def events(self, project: str | None = None) -> Iterator[ServerSentEvent | StreamOpened]:
        """Build, job and deployment events from now on (of one project, or all), as they happen; a
        StreamOpened first and after every reconnection."""
        params = {"project": project} if project else {}
        for event in self._stream("/events", params, announce=True):
            if isinstance(event, StreamOpened) or event.event in ("build", "job", "deployment"):
                yield event

    def post_webhook(self, path: str, body: bytes, headers: dict[str, str]) -> httpx.Response:
        """POST a signed forge webhook to `path`; the answer whatever its status (the caller reads it)."""
        try:
            return self._http.post(path, content=body, headers=headers)
        except httpx.HTTPError as exc:
            raise self._unreachable(exc) from None

    # How requests are sent and refusals told

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        return self._send(method, path, **kwargs).json()

    def _send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        self._need_token()
        try:
            response = self._http.request(method, API + path, **kwargs)
        except httpx.HTTPError as exc:
            raise self._unreachable(exc) from None
        if response.is_error:
            raise self._refused(response)
        return response

    def _stream(
        self, path: str, params: dict[str, Any], *, announce: bool = False
    ) -> Iterator[ServerSentEvent | StreamOpened]:
        """Server-Sent Events from `path`, reconnecting with Last-Event-ID when the connection drops,
        for up to RECONNECT_FOR seconds without an answer; the caller stops reading when it is done."""
        self._need_token()
        last_id = ""
        failing_since: float | None = None
        timeout = httpx.Timeout(30, read=STREAM_READ_TIMEOUT)
        while True:
            headers = {"Last-Event-ID": last_id} if last_id else {}
            try:
                with connect_sse(
                    self._http, "GET", API + path, params=params, headers=headers, timeout=timeout
                ) as source:
                    if source.response.is_error:
                        source.response.read()
                        raise self._refused(source.response)
                    failing_since = None
                    if announce:
                        yield StreamOpened()
                    for event in source.iter_sse():
                        if event.id:
                            last_id = event.id
                        yield event
            except httpx.HTTPError as exc:
                failing_since = failing_since or time.monotonic()
                if time.monotonic() - failing_since > RECONNECT_FOR:
                    raise self._unreachable(exc) from None
            time.sleep(0.5)

    def _need_token(self) -> None:
        if not self.token:
            raise ClientError(
                "no API token: set CISERVER_TOKEN or pass --token "
                "(`ciserver token create --role viewer` on the server's host makes one)"
            )

    def _unreachable(self, exc: httpx.HTTPError) -> ClientError:
        if isinstance(exc, httpx.UnsupportedProtocol | httpx.InvalidURL):
            return ClientError(f"--url / CISERVER_URL: {self.url!r} is not an http:// or https:// URL")
        reason = str(exc) or type(exc).__name__
        return ClientError(
            f"cannot reach the server at {self.url}: {reason} (is it running? set CISERVER_URL or --url)"
        )

    def _refused(self, response: httpx.Response) -> ClientError:
        detail = _detail(response)
        code = response.status_code
        if code == 401:
            return ClientError(
                f"the server refused the token (401: {detail}): set CISERVER_TOKEN or --token to a valid "
                "token (`ciserver token create` on the server's host)"
            )
        if code == 403:
            return ClientError(f"not allowed (403): {detail}")
        if code == 404 and detail == "Not Found":
            return ClientError(
                f"{response.request.url.path} is not a route of the server at {self.url} (404): "
                "is CISERVER_URL a ciserver of this version?"
            )
        return ClientError(f"{detail} ({code})")


def _detail(response: httpx.Response) -> str:
    """The `detail` of a FastAPI error answer, else the start of the body, on one line."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("detail"), str):
        text = body["detail"]
    elif isinstance(body, dict) and "detail" in body:
        text = str(body["detail"])
    else:
        text = response.text or response.reason_phrase
    return " ".join(text.split())[:500]
