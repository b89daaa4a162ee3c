"""Commit statuses back to the forge: a thread in every API process that reads what changed, works
out what each forge should show, and sends it.

Driven by the events table (ciserver.store.events), not by scanning builds: an event is written in
the same transaction as the change it records, so every committed change of a build or job is seen
exactly when it is committed, survives a restart of every process (the cursor is in the database
too), and costs nothing while nothing changes. An event only says which build to look at: the
statuses are worked out from the build and its jobs as they are at that moment (ciserver.status_texts),
so events read late, twice, or out of order cannot make a forge show an older state.

The thread wakes on the event stream's Redis message after each commit that added events
(ciserver.event_bus), so a forge hears of a change within a pass of its commit; the interval is its
fallback when Redis is away or a message is lost.

Never on the worker's path: a forge that is slow, down or refusing delays only its own statuses. A
failed send is retried after STATUS_BACKOFF x 2^n seconds, up to `status_attempts` times; a 401, 403
or 404 (a wrong token, a token without the right scope, a repository it cannot see) gives up at once.
Either way the reason is kept on the status and shown by `GET /api/v1/builds/{id}`, and a later change
of state tries again (the token may have been fixed).
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import timedelta

import httpx
from redis import Redis
from redis.client import PubSub
from redis.exceptions import RedisError
from sqlalchemy.exc import SQLAlchemyError

from ciserver.config import Settings
from ciserver.crypto import SecretKeyError, load_fernet
from ciserver.event_bus import CHANNEL
from ciserver.forges import STATUS_FORGES
from ciserver.forges.base import StatusReport, StatusState
from ciserver.status_texts import wanted_statuses
from ciserver.store.db import session_scope
from ciserver.store.models import Build, utcnow
from ciserver.store.statuses import (
    ClaimedStatus,
    advance_cursor,
    attempts_of,
    changed_builds,
    claim,
    due_status_ids,
    record_failure,
    record_sent,
    release,
    set_wanted,
)

log = logging.getLogger(__name__)

REREAD = timedelta(seconds=10)  # events this recent are read again (see store.statuses.changed_builds)
GIVE_UP_AT_ONCE = frozenset({401, 403, 404})
_MAX_ERROR = 500  # of a forge's answer kept as the reason
# Seconds a wake-up waits for the commits that come with it: a busy server's many commits a second
# make a few passes, not one each (a pass costs a few milliseconds of CPU).
GATHER = 0.1
RESUBSCRIBE = 30.0  # seconds between attempts to get the wake-ups back after Redis went away


def refresh_changed(settings: Settings) -> int:
    """Bring the statuses of every build that changed up to date; returns how many rows changed."""
    with session_scope(settings.db_url) as session:
        build_ids, newest = changed_builds(session, utcnow() - REREAD)
        changed = 0
        for build_id in build_ids:
            build = session.get(Build, build_id)
            forge = STATUS_FORGES.get(build.project.forge) if build is not None else None
            if build is None or forge is None:
                continue
            changed += set_wanted(session, build.id, wanted_statuses(build, per_job=forge.per_job_statuses))
        advance_cursor(session, newest)
    return changed


def send_due(settings: Settings, client: httpx.Client) -> int:
    """Send every status that is due, oldest first; returns how many the forges took.

    After a forge fails to answer, the rest of that project's statuses wait for the next pass, so a
    forge that hangs costs one timeout per pass, not one per status.
    """
    fernet = load_fernet(settings)
    lease = timedelta(seconds=settings.status_timeout * 2 + 5)
    with session_scope(settings.db_url) as session:
        due = due_status_ids(session, utcnow())
    sent = 0
    unreachable: set[str] = set()
    for status_id in due:
        with session_scope(settings.db_url) as session:
            claimed = claim(session, status_id, utcnow(), lease, fernet)
        if claimed is None:
            continue
        if claimed.repository in unreachable:
            with session_scope(settings.db_url) as session:
                release(session, claimed)
            continue
        outcome = _send(settings, client, claimed)
        with session_scope(settings.db_url) as session:
            if outcome is None:
                record_sent(session, claimed)
                sent += 1
                continue
            error, give_up, transport = outcome
            if transport:
                unreachable.add(claimed.repository)
            attempts = attempts_of(session, claimed.id) + 1
            if attempts >= settings.status_attempts:
                give_up = True
            delay = settings.status_backoff * 2 ** (attempts - 1)
            record_failure(
                session,
                claimed,
                f"gave up: {error}" if give_up else error,
                give_up=give_up,
                retry_at=utcnow() + timedelta(seconds=delay),
            )
            log.warning(
                "status %s of build %s on %s: %s%s",
                claimed.context,
                claimed.build_id,
                claimed.repository,
                error,
                " (gave up)" if give_up else f" (attempt {attempts}, again in {delay:g} s)",
            )
    return sent


def _send(settings: Settings, client: httpx.Client, claimed: ClaimedStatus) -> tuple[str, bool, bool] | None:
    """None when the forge took it; else (why not, whether to give up now, whether it never answered)."""
    forge = STATUS_FORGES[claimed.forge]
    api_url = claimed.api_url or forge.default_api_url
    if api_url is None:
        return (
            f"no forge API URL is set for {claimed.repository} (ciserver project update --forge-url)",
            True,
            False,
        )
    report = StatusReport(
        sha=claimed.sha,
        ref=claimed.ref,
        context=claimed.context,
        state=StatusState(claimed.state),
        description=claimed.description,
        target_url=f"{settings.public_url.rstrip('/')}/builds/{claimed.build_id}",
    )
    request = forge.status_request(api_url, claimed.repository, claimed.token, report)
    try:
        response = client.request(request.method, request.url, headers=request.headers, json=request.json)
    except httpx.HTTPError as exc:
        return f"the forge did not answer: {type(exc).__name__}: {exc}"[:_MAX_ERROR], False, True
    if response.is_success or forge.status_already_set(response.status_code, response.text):
        return None
    answer = " ".join(response.text.split())[:_MAX_ERROR]
    error = f"{request.method} {_path(request.url)} answered {response.status_code}: {answer}"
    return error, response.status_code in GIVE_UP_AT_ONCE, False


def _path(url: str) -> str:
    """The request's URL as an error shows it: without a query (none is sent, but a base URL an
    operator set with one would show it)."""
    return url.split("?", 1)[0]


class StatusThread(threading.Thread):
    """Every `status_interval` seconds until stopped: statuses of changed builds worked out, due ones sent."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(name="ciserver-statuses", daemon=True)
        self.settings = settings
        self.stopped = threading.Event()
        self._resubscribe_at = 0.0

    def run(self) -> None:
        timeout = httpx.Timeout(self.settings.status_timeout)
        wake_ups = self._subscribe()
        with httpx.Client(timeout=timeout, follow_redirects=False) as client:
            while not self.stopped.is_set():
                wake_ups = self._wait(wake_ups)
                if self.stopped.is_set():
                    break
                try:
                    refresh_changed(self.settings)
                    send_due(self.settings, client)
                except (SQLAlchemyError, SecretKeyError) as exc:
                    log.debug("statuses: will try again: %s", exc)
                except Exception:
                    log.exception("statuses: unexpected error")
        if wake_ups is not None:
            wake_ups.close()

    def _subscribe(self) -> PubSub | None:
        if not self.settings.redis_url:
            return None
        try:
            wake_ups = Redis.from_url(self.settings.redis_url, socket_connect_timeout=1).pubsub(
                ignore_subscribe_messages=True
            )
            wake_ups.subscribe(CHANNEL)
            return wake_ups
        except RedisError as exc:
            log.debug("statuses: no wake-ups, polling every %s s: %s", self.settings.status_interval, exc)
            return None

    def _wait(self, wake_ups: PubSub | None) -> PubSub | None:
        """Until the next pass: a commit's wake-up, or the interval. Returns the subscription, or
        None once it broke (the interval alone from then on)."""
        if wake_ups is None:
            self.stopped.wait(self.settings.status_interval)
            if self.settings.redis_url and time.monotonic() >= self._resubscribe_at:
                self._resubscribe_at = time.monotonic() + RESUBSCRIBE
                return self._subscribe()
            return None
        try:
            if wake_ups.get_message(timeout=self.settings.status_interval) is not None:
                self.stopped.wait(GATHER)
                while wake_ups.get_message(timeout=0) is not None:
                    pass
            return wake_ups
        except (RedisError, OSError) as exc:
            log.debug("statuses: wake-ups lost, polling every %s s: %s", self.settings.status_interval, exc)
            wake_ups.close()
            return None
