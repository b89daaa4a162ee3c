"""The strategies: how a release replaces the one an environment runs.

- recreate: stop the old version, start the new, health-check, route to it (downtime between).
- blue_green: start the new color beside the old, health-check it, switch all traffic in one reload;
  the old color keeps running for `keep_previous` so a rollback is one switch back.
- canary: start the new color, then set the router's weights to each step in turn and, between
  steps, watch the new version's 5xx share in the access log and its health; too many errors or a
  failed health check puts the weights back to 100% old and removes the canary (rolled_back).

Everything with side effects is behind a small Protocol, so this module decides and the worker
(workers.deploy) supplies Docker, nginx and the database. A deployment can stop between any two
steps (pause) and go on from where it stood; `Journal` keeps that place.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from ciserver.deploy.router import Backend, RouterError
from ciserver.deploy.traffic_log import AccessLog
from ciserver.pipeline import Strategy
from ciserver.states import Control

COLORS = ("blue", "green")
UNHEALTHY_IN_A_ROW = 3  # one missed check during a step is noise; three are a verdict


class Target(Protocol):
    """Where the service's containers run (workers.executors.docker_service)."""

    def start(self, color: str) -> str:
        """Run the release in `color` (reusing a container already running it); its host:port."""
        ...

    def healthy(self, address: str) -> str | None:
        """None when the health check passes, else what it got."""
        ...

    def remove(self, color: str) -> None: ...


class Routing(Protocol):
    def set_weights(self, backends: Sequence[Backend]) -> None: ...


class Journal(Protocol):
    """The deployment's record: written before anything is reported, read for operators' requests."""

    def save(self, **values: Any) -> None: ...

    def add_step(self, entry: dict[str, Any]) -> None: ...

    def control(self) -> tuple[Control | None, str | None]:
        """(pause, abort or hand back, who asked), or (None, None)."""
        ...


@dataclass
class Place:
    """Where a deployment stands; kept in the journal so that a resumed one goes on from here."""

    step: int = 0
    color: str | None = None
    address: str | None = None
    previous_color: str | None = None
    previous_address: str | None = None


class RolloutStatus(enum.StrEnum):
    """How a rollout ends, or stops for now: paused by an operator, or handed back by its worker
    (which stops) for another to go on from the recorded step."""

    succeeded = "succeeded"
    failed = "failed"
    rolled_back = "rolled_back"
    paused = "paused"
    handed_back = "handed_back"


@dataclass(frozen=True)
class Outcome:
    status: RolloutStatus
    reason: str | None = None
    retire: str | None = None  # the previous color, to remove once keep_previous has passed


@dataclass
class Rollout:
    strategy: Strategy
    health_timeout: float
    target: Target
    routing: Routing
    journal: Journal
    log: AccessLog
    place: Place = field(default_factory=Place)
    clock: Callable[[], float] = time.monotonic
    sleep: Callable[[float], None] = time.sleep

    @property
    def steps(self) -> list[int]:
        canary = self.strategy.canary
        if canary is None or self.place.previous_address is None:
            return [100]  # nothing to compare with on a first deployment: all at once
        return canary.steps

    def run(self) -> Outcome:
        """The deployment to its end (or its pause). Whatever fails on the way (nginx refusing the
        weights, the engine refusing a container) puts the traffic back on the previous version."""
        try:
            return self._run()
        except Exception as exc:
            reason = f"the router refused the weights: {exc}" if isinstance(exc, RouterError) else str(exc)
            try:
                return self._undo(reason or type(exc).__name__)
            except Exception as again:
                return Outcome(RolloutStatus.failed, f"{reason}; and going back failed too: {again}")

    def _run(self) -> Outcome:
        place = self.place
        if place.address is None:
            if self.strategy.kind == "recreate" and place.previous_color is not None:
                self.target.remove(place.previous_color)
            place.color = next(c for c in COLORS if c != place.previous_color)
            place.address = self.target.start(place.color)
            self.journal.save(color=place.color, address=place.address)
            problem = self._wait_healthy(place.address)
            if problem:
                return self._undo(f"the new version never became healthy at {self._health_url()}: {problem}")
        while place.step < len(self.steps):
            weight = self.steps[place.step]
            outcome = self._step(place.step, weight)
            if outcome is not None:
                return outcome
            place.step += 1
            self.journal.save(step=place.step)
        retire = place.previous_color if place.previous_color != place.color else None
        if retire is not None and self.strategy.kind == "recreate":
            retire = None  # already stopped
        return Outcome(RolloutStatus.succeeded, retire=retire)

    def _health_url(self) -> str:
        return f"http://{self.place.address}"

    def _step(self, index: int, weight: int) -> Outcome | None:
        place = self.place
        assert place.address is not None
        backends = [Backend(place.address, weight)]
        if weight < 100 and place.previous_address:
            backends.insert(0, Backend(place.previous_address, 100 - weight))
        since = self.log.position()
        started = now_text()
        self.routing.set_weights(backends)
        self.journal.save(weight=weight)
        entry: dict[str, Any] = {"step": index + 1, "weight": weight, "started_at": started}
        canary = self.strategy.canary
        if canary is not None and weight < 100 and place.previous_address:
            verdict = self._analyse(since, canary.interval, canary.max_error_rate, canary.min_requests, entry)
            if verdict is not None:
                entry["finished_at"] = now_text()
                self.journal.add_step(entry)
                return verdict
        else:
            entry["healthy"] = self.target.healthy(place.address) is None
        entry["finished_at"] = now_text()
        self.journal.add_step(entry)
        return None

    def _analyse(
        self, since: int, interval: float, max_rate: float, min_requests: int, entry: dict[str, Any]
    ) -> Outcome | None:
        """Watch the step for `interval`: an operator's pause or abort, the new version's answers, its
        health. Returns how the deployment ends (or pauses), or None to go on to the next step."""
        assert self.place.address is not None
        deadline = self.clock() + interval
        poll = max(0.2, min(1.0, interval / 10))
        unhealthy = 0
        while True:
            action, by = self.journal.control()
            if action == Control.pause:
                return Outcome(RolloutStatus.paused, f"paused by {by}")
            if action == Control.hand_back:  # the worker stops: another one goes on from this step
                return Outcome(RolloutStatus.handed_back, f"handed back by {by}")
            if action == Control.abort:
                return self._undo(f"aborted by {by}")
            figures = self.log.figures(since, self.place.address)
            entry.update(requests=figures.requests, errors=figures.errors, error_rate=figures.error_rate)
            if figures.errors > max_rate * max(figures.requests, min_requests):
                judged = max(figures.requests, min_requests)
                return self._undo(
                    f"{figures.errors} of {judged} answers of the new version were 5xx "
                    f"({figures.errors / judged:.3f}), above max_error_rate {max_rate}"
                )
            problem = self.target.healthy(self.place.address)
            unhealthy = unhealthy + 1 if problem else 0
            entry["healthy"] = problem is None
            if unhealthy >= UNHEALTHY_IN_A_ROW:
                return self._undo(f"health check failed {unhealthy} times in a row: {problem}")
            if self.clock() >= deadline:
                return None
            self.sleep(min(poll, max(0.0, deadline - self.clock())))

    def _wait_healthy(self, address: str) -> str | None:
        deadline = self.clock() + self.health_timeout
        while True:
            problem = self.target.healthy(address)
            action, by = self.journal.control()
            if problem is None or action == Control.abort:
                return None if problem is None else f"aborted by {by}"
            if self.clock() >= deadline:
                return problem
            self.sleep(0.25)

    def _undo(self, reason: str) -> Outcome:
        """Back to the previous version (all its traffic), the new one removed."""
        place = self.place
        if place.previous_address is not None and self.strategy.kind != "recreate":
            self.routing.set_weights([Backend(place.previous_address, 100)])
            self.journal.save(weight=0)
            if place.color is not None:
                self.target.remove(place.color)
            return Outcome(RolloutStatus.rolled_back, reason)
        if place.color is not None and place.step == 0:
            self.target.remove(place.color)
        return Outcome(RolloutStatus.failed, reason)


def now_text() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")
