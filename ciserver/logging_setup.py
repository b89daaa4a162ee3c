"""Process logs (not job logs): one handler on the root logger, as text for people or as JSON lines
for a log shipper (CISERVER_LOG_FORMAT), every line carrying the build, job, deployment and request
it was written for.

The ids live in context variables: a worker sets them around the task it runs (`log_context`), the
API per request (`api.request_id`), and asyncio and the threadpool copy them into what a request
starts. A JSON line is `json.dumps` of a dict, so nothing a pusher wrote (a job name, a branch in a
message) can break a line or forge another; ANSI colours that RQ puts in its messages are dropped
there, since no terminal reads them.
"""

from __future__ import annotations

import contextvars
import json
import logging
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Literal

LogFormat = Literal["text", "json"]

# The ids a line can carry, in the order they are shown.
CONTEXT_KEYS = ("request_id", "build_id", "job_id", "deployment_id")

_context: contextvars.ContextVar[dict[str, int | str]] = contextvars.ContextVar("ciserver_log_context")
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
TEXT_FORMAT = "%(asctime)s %(name)s %(levelname)s %(message)s"


def current_context() -> dict[str, int | str]:
    """The ids set for what this thread or task is doing now."""
    return _context.get({})


@contextmanager
def log_context(**ids: int | str | None) -> Iterator[None]:
    """Lines logged inside carry these ids (None ones are left out), with those already set."""
    token = _context.set({**current_context(), **{k: v for k, v in ids.items() if v is not None}})
    try:
        yield
    finally:
        _context.reset(token)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time (UTC, ISO 8601), level, logger, message, the ids known, and the
    exception's traceback when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": _ANSI.sub("", record.getMessage()),
        }
        line.update(current_context())
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            line["exception"] = record.exc_text
        if record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        return json.dumps(line, ensure_ascii=False, default=str)


class TextFormatter(logging.Formatter):
    """The worker's format of before, with the known ids after the message: `... [job_id=42]`."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        ids = current_context()
        if not ids:
            return text
        shown = " ".join(f"{key}={ids[key]}" for key in CONTEXT_KEYS if key in ids)
        return f"{text} [{shown}]"


def formatter_for(log_format: LogFormat) -> logging.Formatter:
    return JsonFormatter() if log_format == "json" else TextFormatter()


def configure_logging(log_format: LogFormat, level: int = logging.INFO) -> None:
    """The root logger writes to stderr in `log_format`, replacing any handler set before; the
    libraries' loggers (uvicorn's, RQ's) propagate to it, so every line of the process has one form."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter_for(log_format))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
