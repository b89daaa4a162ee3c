"""GET /api/v1/events against the real server: a client on the stream sees a signed push's build and
jobs move in order, moments after each change; a reconnect with Last-Event-ID gets exactly what it
missed; the project filter holds; a viewer token is enough and no token is refused."""

from __future__ import annotations

import json
import statistics
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from tests.e2e.test_push_to_green import TWO_STAGES, registered
from tests.support.server import CiServer


class Listener(threading.Thread):
    """A client of the event stream, keeping every frame with the moment it arrived."""

    def __init__(self, url: str, token: str, *, params: dict[str, str] | None = None, **headers: str) -> None:
        super().__init__(daemon=True)
        self.url, self.params = f"{url}/api/v1/events", params or {}
        self.headers = {"Authorization": f"Bearer {token}", **headers}
        self.frames: list[dict[str, Any]] = []
        self.connected = threading.Event()
        self.response: httpx.Response
        self.status = 0

    def run(self) -> None:
        with httpx.Client(timeout=60) as client:
            try:
                self._read(client)
            except (httpx.HTTPError, ValueError):  # closed by __exit__
                pass

    def _read(self, client: httpx.Client) -> None:
        request = client.build_request("GET", self.url, params=self.params, headers=self.headers)
        self.response = response = client.send(request, stream=True)
        self.status = response.status_code
        self.connected.set()
        if response.status_code == 200:
            frame: dict[str, str] = {}
            for line in response.iter_lines():
                if line:
                    key, _, value = line.partition(":")
                    frame[key] = value.removeprefix(" ")
                    continue
                if "data" in frame:
                    data = json.loads(frame["data"])
                    self.frames.append(
                        {**data, "sse_id": frame["id"], "sse_event": frame["event"], "got": time.time()}
                    )
                frame = {}

    def __enter__(self) -> Listener:
        self.start()
        assert self.connected.wait(10), "the stream did not open"
        assert self.status == 200, self.response.read()
        return self

    def __exit__(self, *_: object) -> None:
        self.response.close()
        self.join(5)

    def wait_for(self, kind: str, subject: int, status: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any((f["kind"], f["id"], f["status"]) == (kind, subject, status) for f in self.frames):
                return
            time.sleep(0.02)
        raise AssertionError(f"no {kind} {subject} {status} among {self.told()}")

    def told(self, project: str | None = None) -> list[tuple[str, Any, str]]:
        return [
            (f["kind"], f.get("name") or f["id"], f["status"])
            for f in self.frames
            if project is None or f["project"] == project
        ]


def test_a_push_is_seen_on_the_stream_from_queued_to_success_in_order_within_moments(
    ciserver: CiServer, tmp_path: Path
) -> None:
    name, sha, _ = registered(ciserver, tmp_path / "a", TWO_STAGES)
    other, other_sha, _ = registered(ciserver, tmp_path / "b", TWO_STAGES)
    viewer = ciserver.token_for("viewer")
    with (
        Listener(ciserver.url, viewer, params={"project": name}) as only,
        Listener(ciserver.url, viewer) as every,
    ):
        build_id = ciserver.push_github(name, sha).json()["build_id"]
        other_id = ciserver.push_github(other, other_sha).json()["build_id"]
        only.wait_for("build", build_id, "success")
        every.wait_for("build", other_id, "success")
        every.wait_for("build", build_id, "success")

    assert only.told() == [
        ("build", build_id, "queued"),
        ("build", build_id, "running"),
        ("job", "hello", "queued"),
        ("job", "package", "queued"),
        ("job", "hello", "running"),
        ("job", "hello", "success"),
        ("job", "package", "running"),
        ("job", "package", "success"),
        ("build", build_id, "success"),
    ]
    assert every.told(name) == only.told()  # the same frames, whoever else builds
    assert {f["project"] for f in every.frames} == {name, other}
    first = only.frames[0]
    assert (first["sse_event"], first["sse_id"]) == ("build", str(first["event_id"]))
    assert (first["sha"], first["branch"], first["ref"]) == (sha, "main", "refs/heads/main")
    ids = [f["event_id"] for f in every.frames]
    # Each subject's events come in order (told() above); across subjects, on PostgreSQL, an event
    # may come after one with a higher id whose transaction committed first. None comes twice.
    assert len(set(ids)) == len(ids)

    # Each frame reaches the client moments after its change was written, not at a poll's next turn.
    delays = [f["got"] - datetime.fromisoformat(f["at"]).astimezone(UTC).timestamp() for f in only.frames]
    median, most = statistics.median(delays) * 1000, max(delays) * 1000
    print(f"event stream delay: median {median:.0f} ms, max {most:.0f} ms")
    assert statistics.median(delays) < 0.25, delays


def test_a_reconnect_with_last_event_id_gets_exactly_the_missed_events(
    ciserver: CiServer, tmp_path: Path
) -> None:
    name, sha, _ = registered(ciserver, tmp_path, TWO_STAGES)
    with Listener(ciserver.url, ciserver.token, params={"project": name}) as first:
        build_id = ciserver.push_github(name, sha).json()["build_id"]
        first.wait_for("build", build_id, "running")
    seen_until = first.frames[-1]["event_id"]
    ciserver.wait_build(build_id)  # the rest happens while no client is connected

    with Listener(ciserver.url, ciserver.token, params={"project": name}) as fresh:
        time.sleep(0.3)  # without Last-Event-ID or after: only what happens from now on
    with Listener(
        ciserver.url, ciserver.token, params={"project": name}, **{"Last-Event-ID": str(seen_until)}
    ) as resumed:
        resumed.wait_for("build", build_id, "success")
        time.sleep(0.3)  # nothing more comes
    with Listener(ciserver.url, ciserver.token, params={"project": name, "after": "0"}) as everything:
        everything.wait_for("build", build_id, "success")

    assert fresh.frames == []
    missed = [f for f in everything.frames if f["event_id"] > seen_until]
    assert [f["event_id"] for f in resumed.frames] == [f["event_id"] for f in missed]
    assert [f["event_id"] for f in everything.frames[: len(first.frames)]] == [
        f["event_id"] for f in first.frames
    ]
    assert resumed.told()[-1] == ("build", build_id, "success")


def test_the_stream_needs_a_token_names_an_unknown_project_and_a_bad_last_event_id(
    ciserver: CiServer,
) -> None:
    url = f"{ciserver.url}/api/v1/events"
    assert httpx.get(url, timeout=10).status_code == 401
    bearer = {"Authorization": f"Bearer {ciserver.token_for('viewer')}"}
    unknown = httpx.get(url, params={"project": "octo/nowhere"}, headers=bearer, timeout=10)
    assert unknown.status_code == 404 and "octo/nowhere" in unknown.text
    bad = httpx.get(url, headers={**bearer, "Last-Event-ID": "-1; drop"}, timeout=10)
    assert bad.status_code == 422 and "Last-Event-ID" in bad.text
