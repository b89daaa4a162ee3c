"""A job's log stream read as a browser reads it."""

from __future__ import annotations

import json
import threading
import time

import httpx


class LogFollower(threading.Thread):
    """A client of a job's log stream that behaves as a browser's EventSource: when the connection
    drops it connects again with Last-Event-ID, until the stream says the job ended."""

    def __init__(self, base_url: str, token: str, job_id: int) -> None:
        super().__init__(daemon=True)
        self.url = f"{base_url}/api/v1/jobs/{job_id}/log/stream"
        self.headers = {"Authorization": f"Bearer {token}"}
        self.text, self.last_id, self.status = "", "", None
        self.reconnects = 0

    def run(self) -> None:
        deadline = time.monotonic() + 120
        while self.status is None and time.monotonic() < deadline:
            headers = dict(self.headers, **({"Last-Event-ID": self.last_id} if self.last_id else {}))
            try:
                with httpx.stream("GET", self.url, headers=headers, timeout=30) as response:
                    self._read(response)
            except httpx.TransportError:
                pass
            if self.status is None:
                self.reconnects += 1
                time.sleep(0.2)

    def _read(self, response: httpx.Response) -> None:
        event: dict[str, str] = {}
        for line in response.iter_lines():
            if line:
                key, _, value = line.partition(":")
                event[key] = value.removeprefix(" ")
                continue
            if event.get("event") == "log":
                self.text += json.loads(event["data"])["text"]
                self.last_id = event["id"]
            elif event.get("event") == "end":
                self.status = json.loads(event["data"])["status"]
                return
            event = {}
