"""The strategies' decisions, step by step, with the containers, nginx and the database replaced by
recorders (the e2e test in test_deployments.py runs them for real): which color starts, which
weights nginx gets in which order, when a canary is judged bad, and how pause, resume and abort act."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from ciserver.deploy.rollout import Place, Rollout
from ciserver.deploy.router import Backend, RouterError
from ciserver.deploy.traffic_log import AccessLog
from ciserver.pipeline import BlueGreen, Canary, Recreate, Strategy

OLD, NEW = "127.0.0.1:1001", "127.0.0.1:1002"


class Target:
    def __init__(self, healthy: bool = True) -> None:
        self.started: list[str] = []
        self.removed: list[str] = []
        self.is_healthy = healthy

    def start(self, color: str) -> str:
        self.started.append(color)
        return NEW

    def healthy(self, address: str) -> str | None:
        return None if self.is_healthy else "GET /healthz answered 503"

    def remove(self, color: str) -> None:
        self.removed.append(color)


class Routing:
    def __init__(self, log: Path | None = None, answers: Sequence[str] = (), fail: bool = False) -> None:
        self.weights: list[dict[str, int]] = []
        self.log, self.answers, self.fail = log, answers, fail

    def set_weights(self, backends: Sequence[Backend]) -> None:
        if self.fail:
            raise RouterError("nginx: [emerg] bind() to 127.0.0.1:9001 failed")
        self.weights.append({b.address: b.weight for b in backends})
        if self.log is not None:  # the traffic that arrives while the step lasts
            with self.log.open("a") as out:
                out.writelines(f"1.0 {NEW} {status} 0.001\n" for status in self.answers)
                out.write(f"1.0 {OLD} 200 0.001\n")


class Journal:
    def __init__(self, control: tuple[str | None, str | None] = (None, None)) -> None:
        self.saved: dict[str, Any] = {}
        self.steps: list[dict[str, Any]] = []
        self.next_control = control

    def save(self, **values: Any) -> None:
        self.saved.update(values)

    def add_step(self, entry: dict[str, Any]) -> None:
        self.steps.append(entry)

    def control(self) -> tuple[str | None, str | None]:
        return self.next_control


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += max(seconds, 0.01)


def rollout(
    strategy: Strategy,
    tmp_path: Path,
    *,
    previous: bool = True,
    target: Target | None = None,
    routing: Routing | None = None,
    journal: Journal | None = None,
    place: Place | None = None,
) -> Rollout:
    clock = Clock()
    return Rollout(
        strategy=strategy,
        health_timeout=5,
        target=target or Target(),
        routing=routing or Routing(),
        journal=journal or Journal(),
        log=AccessLog(tmp_path / "access.log"),
        place=place or (Place(previous_color="blue", previous_address=OLD) if previous else Place()),
        clock=clock,
        sleep=clock.sleep,
    )


CANARY = Strategy(canary=Canary(steps=[5, 25, 100], interval=30, max_error_rate=0.01, min_requests=50))


def test_blue_green_starts_the_other_color_and_switches_everything_at_once(tmp_path: Path) -> None:
    run = rollout(Strategy(blue_green=BlueGreen()), tmp_path)
    outcome = run.run()
    assert (outcome.status, outcome.retire) == ("succeeded", "blue")  # kept for keep_previous, then removed
    assert run.target.started == ["green"] and run.target.removed == []  # type: ignore[attr-defined]
    assert run.routing.weights == [{NEW: 100}]  # type: ignore[attr-defined]
    assert run.journal.saved == {"color": "green", "address": NEW, "weight": 100, "step": 1}  # type: ignore[attr-defined]


def test_a_first_deployment_goes_to_all_traffic_even_with_a_canary(tmp_path: Path) -> None:
    run = rollout(CANARY, tmp_path, previous=False)
    assert run.run().status == "succeeded"
    assert run.target.started == ["blue"]  # type: ignore[attr-defined]
    assert run.routing.weights == [{NEW: 100}]  # type: ignore[attr-defined]


def test_recreate_stops_the_old_version_before_starting_the_new(tmp_path: Path) -> None:
    target = Target()
    outcome = rollout(Strategy(recreate=Recreate()), tmp_path, target=target).run()
    assert (outcome.status, outcome.retire) == ("succeeded", None)
    assert target.removed == ["blue"] and target.started == ["green"]


def test_a_canary_moves_through_its_steps_and_records_what_it_saw(tmp_path: Path) -> None:
    routing = Routing(tmp_path / "access.log", answers=["200"] * 60)
    journal = Journal()
    outcome = rollout(CANARY, tmp_path, routing=routing, journal=journal).run()
    assert outcome.status == "succeeded"
    assert routing.weights == [{OLD: 95, NEW: 5}, {OLD: 75, NEW: 25}, {NEW: 100}]
    assert [(s["weight"], s.get("requests"), s.get("errors")) for s in journal.steps] == [
        (5, 60, 0),
        (25, 60, 0),
        (100, None, None),
    ]


@pytest.mark.parametrize(
    ("answers", "rolled_back"),
    [
        (["200"] * 99 + ["502"], False),  # 1 of 100: 1%, not above
        (["200"] * 98 + ["500", "503"], True),  # 2 of 100: 2%
        (["200"] * 9 + ["500"], True),  # 1 error in 10 requests is judged as 1 of min_requests (50): 2%
        (["200"] * 10, False),
    ],
)
def test_a_canary_over_its_error_rate_rolls_back_by_itself(
    tmp_path: Path, answers: list[str], rolled_back: bool
) -> None:
    target = Target()
    routing = Routing(tmp_path / "access.log", answers=answers)
    outcome = rollout(CANARY, tmp_path, target=target, routing=routing).run()
    if not rolled_back:
        assert outcome.status == "succeeded"
        return
    assert outcome.status == "rolled_back" and "were 5xx" in (outcome.reason or "")
    assert routing.weights == [{OLD: 95, NEW: 5}, {OLD: 100}]  # all traffic back to the old version
    assert target.removed == ["green"]


def test_an_unhealthy_new_version_never_receives_traffic(tmp_path: Path) -> None:
    target, routing = Target(healthy=False), Routing()
    outcome = rollout(Strategy(blue_green=BlueGreen()), tmp_path, target=target, routing=routing).run()
    assert outcome.status == "rolled_back" and "never became healthy" in (outcome.reason or "")
    assert routing.weights == [{OLD: 100}]
    assert target.removed == ["green"]
    first = rollout(Strategy(blue_green=BlueGreen()), tmp_path, previous=False, target=Target(healthy=False))
    assert first.run().status == "failed"


def test_pause_lets_go_and_resume_goes_on_from_the_same_step(tmp_path: Path) -> None:
    journal = Journal(control=("pause", "token:3 (ops)"))
    run = rollout(CANARY, tmp_path, journal=journal)
    paused = run.run()
    assert (paused.status, paused.reason) == ("paused", "paused by token:3 (ops)")
    assert run.place.step == 0 and run.place.color == "green"
    resumed_routing = Routing()
    resumed = rollout(CANARY, tmp_path, routing=resumed_routing, place=run.place)
    assert resumed.run().status == "succeeded"
    assert resumed.target.started == []  # type: ignore[attr-defined]  # the canary already runs
    assert resumed_routing.weights == [{OLD: 95, NEW: 5}, {OLD: 75, NEW: 25}, {NEW: 100}]


def test_abort_puts_all_traffic_back_on_the_old_version(tmp_path: Path) -> None:
    routing, target = Routing(), Target()
    journal = Journal(control=("abort", "token:3 (ops)"))
    outcome = rollout(CANARY, tmp_path, routing=routing, target=target, journal=journal).run()
    assert (outcome.status, outcome.reason) == ("rolled_back", "aborted by token:3 (ops)")
    assert routing.weights[-1] == {OLD: 100} and target.removed == ["green"]


def test_a_router_that_refuses_the_weights_fails_the_deployment_cleanly(tmp_path: Path) -> None:
    target = Target()
    outcome = rollout(CANARY, tmp_path, previous=False, target=target, routing=Routing(fail=True)).run()
    assert outcome.status == "failed" and "bind()" in (outcome.reason or "")
    assert target.removed == ["blue"]  # no container left behind


def test_an_engine_error_after_the_switch_began_puts_the_traffic_back(tmp_path: Path) -> None:
    class Failing(Target):
        def healthy(self, address: str) -> str | None:
            if len(self.started) and routing.weights:
                raise OSError("the Docker Engine is unreachable")
            return None

    routing, target = Routing(), Failing()
    outcome = rollout(CANARY, tmp_path, routing=routing, target=target).run()
    assert (outcome.status, outcome.reason) == ("rolled_back", "the Docker Engine is unreachable")
    assert routing.weights == [{OLD: 95, NEW: 5}, {OLD: 100}] and target.removed == ["green"]
