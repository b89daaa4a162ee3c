"""Two workers racing for the same decision on PostgreSQL, each in its own transaction on its own
connection: the rows that decide are locked (SELECT ... FOR UPDATE), so the second waits for the
first's commit and decides on what it left. SQLite serializes whole transactions (BEGIN IMMEDIATE),
so the race cannot happen there."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from ciserver.states import DeploymentStatus, Status
from ciserver.store import deployments, dispatch, releases
from ciserver.store.builds import PushRecord, record_push
from ciserver.store.db import session_scope
from ciserver.store.models import Build, Deployment, Job, Project
from ciserver.store.transitions import end_job, start_job
from tests.support.store import Planned, green_build, new_build, new_project

LIMIT = 2  # the project's concurrency: two jobs running, three waiting for a slot


def in_two_workers(work: Callable[[int], Any]) -> list[Any]:
    """`work(n)` for n = 0 and 1 at the same moment, in two threads (each opens its own session)."""
    with ThreadPoolExecutor(2) as pool:
        return list(pool.map(work, range(2)))


def running_build(url: str) -> tuple[int, list[int]]:
    """A build of five jobs under the limit: the ids of the two that run."""
    with session_scope(url) as session:
        build_id, _ = new_build(session, [Planned(name) for name in "abcde"], LIMIT)
        running = [j.id for j in session.scalars(select(Job).where(Job.dispatched_at.is_not(None)))]
        for job_id in running:
            assert start_job(session, job_id, "w") is not None
    return build_id, running


def both_end_then_advance(url: str, build_id: int, running: list[int], meet: threading.Barrier) -> list[int]:
    """Each worker ends its job, and, once both have, dispatches what the freed slots allow."""

    def work(n: int) -> list[int]:
        with session_scope(url) as session:
            assert end_job(session, running[n], Status.success)
            meet.wait(10)  # both ended, neither committed: each alone sees one slot free
            return [d.job_id for d in dispatch.advance(session, build_id, LIMIT)]

    return [job_id for ids in in_two_workers(work) for job_id in ids]


def dispatched_now(url: str) -> list[str]:
    with session_scope(url) as session:
        query = select(Job.name).where(Job.dispatched_at.is_not(None), Job.status == Status.queued)
        return sorted(session.scalars(query))


def test_two_jobs_ending_at_once_free_two_slots_and_each_next_job_is_dispatched_once(
    postgres_url: str,
) -> None:
    build_id, running = running_build(postgres_url)
    dispatched = both_end_then_advance(postgres_url, build_id, running, threading.Barrier(2))
    assert len(dispatched) == len(set(dispatched)) == LIMIT
    assert dispatched_now(postgres_url) == ["c", "d"]  # e waits: never more than the limit at once


def test_without_the_lock_both_workers_take_the_same_job(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What the lock prevents, shown by taking it away: both count one free slot and fill it with the
    same job. A second meeting point after counting makes the interleaving certain."""
    counted = threading.Barrier(2)
    busy = dispatch._busy

    def busy_then_meet(session: Session, project_id: int) -> int:
        result = busy(session, project_id)
        try:
            counted.wait(2)
        except threading.BrokenBarrierError:
            pass  # the second count of a worker: the other is past its first already
        return result

    monkeypatch.setattr(dispatch, "lock_project", lambda session, project_id: None)
    monkeypatch.setattr(dispatch, "_busy", busy_then_meet)
    build_id, running = running_build(postgres_url)
    dispatched = both_end_then_advance(postgres_url, build_id, running, threading.Barrier(2))
    assert len(dispatched) != len(set(dispatched))  # one job queued twice


def test_two_deploy_workers_claiming_one_deployment_only_one_gets_it(postgres_url: str) -> None:
    with session_scope(postgres_url) as session:
        project = new_project(session)
        pipeline = (
            "image: busybox\njobs:\n  package: {image_build: {context: .}}\n"
            "environments:\n  staging: {auto: true, listen: '127.0.0.1:9001'}\n"
            "service: {port: 8000, health: /healthz}\n"
        )
        [deployment_id] = releases.deployments_for_green_build(
            session, green_build(session, project, pipeline).id
        )
    meet = threading.Barrier(2)

    def work(n: int) -> bool:
        with session_scope(postgres_url) as session:
            session.get(Deployment, deployment_id)  # both read it pending before either claims
            meet.wait(10)
            return deployments.claim(session, deployment_id, f"worker-{n}") is not None

    assert sorted(in_two_workers(work)) == [False, True]
    with session_scope(postgres_url) as session:
        deployment = session.get(Deployment, deployment_id)
        assert deployment is not None and deployment.status == DeploymentStatus.progressing


def test_one_push_replayed_under_two_delivery_ids_at_once_is_recorded_once(postgres_url: str) -> None:
    with session_scope(postgres_url) as session:
        project_id = new_project(session).id
    push = PushRecord(
        ref="refs/heads/main", branch="main", tag=None, sha="b" * 40, before="a" * 40,
        message="m", author="a", changed_files=None,
    )  # fmt: skip
    meet = threading.Barrier(2)

    def work(n: int) -> bool:
        with session_scope(postgres_url) as session:
            project = session.get_one(Project, project_id)
            meet.wait(10)
            return record_push(session, project, push, forge="github", delivery_id=f"delivery-{n}")[1]

    assert sorted(in_two_workers(work)) == [False, True]
    with session_scope(postgres_url) as session:
        assert session.scalar(select(func.count()).select_from(Build)) == 1


def test_a_manual_job_played_twice_at_once_is_played_once(postgres_url: str) -> None:
    with session_scope(postgres_url) as session:
        build_id, _ = new_build(session, [Planned("unit", when="manual")])
        manual = session.scalars(select(Job.id).where(Job.build_id == build_id)).one()
    meet = threading.Barrier(2)

    def work(_n: int) -> bool:
        with session_scope(postgres_url) as session:
            job = session.get_one(Job, manual)
            meet.wait(10)  # both saw it waiting
            return dispatch.play_manual(session, job)

    assert sorted(in_two_workers(work)) == [False, True]


def test_two_environments_of_a_project_finishing_at_once_both_finish(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Production and qa finish at the same moment: each locks its environment, then looks at every
    environment the release names (which follow it?). Left to those row locks alone, each would hold
    the row the other waits for, and PostgreSQL would end one as a deadlock, leaving that deployment
    progressing forever. The meeting point holds each at that look for as long as the other can come."""
    with session_scope(postgres_url) as session:
        project = new_project(session)
        pipeline = (
            "image: busybox\njobs:\n  package: {image_build: {context: .}}\nenvironments:\n"
            "  production: {auto: true, listen: '127.0.0.1:9001'}\n"
            "  qa: {auto: true, listen: '127.0.0.1:9002'}\n"
            "service: {port: 8000, health: /healthz}\n"
        )
        started = releases.deployments_for_green_build(session, green_build(session, project, pipeline).id)
    for n, deployment_id in enumerate(started):
        with session_scope(postgres_url) as session:
            assert deployments.claim(session, deployment_id, f"worker-{n}") is not None
    meet, follow = threading.Barrier(2), deployments._follow

    def meet_then_follow(session: Session, release: Any, after: str) -> list[int]:
        with contextlib.suppress(threading.BrokenBarrierError):
            meet.wait(2)  # broken when the other cannot come before this one commits
        return follow(session, release, after)

    monkeypatch.setattr(deployments, "_follow", meet_then_follow)

    def work(n: int) -> list[int]:
        with session_scope(postgres_url) as session:
            return deployments.finish(session, started[n], DeploymentStatus.succeeded)

    assert in_two_workers(work) == [[], []]
    with session_scope(postgres_url) as session:
        statuses = session.scalars(select(Deployment.status).where(Deployment.id.in_(started)))
        assert list(statuses) == [DeploymentStatus.succeeded] * 2
