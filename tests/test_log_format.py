"""Process log lines as CISERVER_LOG_FORMAT makes them: JSON objects with the ids of the work they were
written for, or text for people."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest
from pydantic import ValidationError

from ciserver.config import Settings
from ciserver.logging_setup import configure_logging, formatter_for, log_context

Lines = tuple[logging.Logger, io.StringIO, "logging.StreamHandler[io.StringIO]"]


@pytest.fixture
def lines() -> Iterator[Lines]:
    """A logger writing to a string, through a handler whose formatter a test sets."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    logger = logging.getLogger("ciserver.test_log_format")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    yield logger, stream, handler
    logger.removeHandler(handler)


def test_a_json_line_has_time_level_logger_message_and_the_ids_of_its_work(lines: Lines) -> None:
    logger, stream, handler = lines
    handler.setFormatter(formatter_for("json"))
    with log_context(build_id=7), log_context(job_id=42, deployment_id=None):
        logger.info("job %s: attempt %s ended %s", 42, 1, "success")
    logger.warning("outside any work")
    inside, outside = (json.loads(line) for line in stream.getvalue().splitlines())
    assert inside["message"] == "job 42: attempt 1 ended success"
    assert (inside["level"], inside["logger"]) == ("INFO", "ciserver.test_log_format")
    assert (inside["build_id"], inside["job_id"]) == (7, 42)
    assert "deployment_id" not in inside and "request_id" not in inside
    assert inside["time"].endswith("+00:00")
    assert set(outside) == {"time", "level", "logger", "message"}


def test_what_a_pusher_wrote_stays_inside_one_line(lines: Lines) -> None:
    logger, stream, handler = lines
    handler.setFormatter(formatter_for("json"))
    hostile = 'main\n{"level": "CRITICAL", "message": "forged"}\r\x1b[31mred\x1b[0m "quoted"'
    logger.info("branch %s", hostile)
    (line,) = stream.getvalue().splitlines()
    assert (
        json.loads(line)["message"] == 'branch main\n{"level": "CRITICAL", "message": "forged"}\rred "quoted"'
    )


def test_an_exception_is_kept_in_its_line(lines: Lines) -> None:
    logger, stream, handler = lines
    handler.setFormatter(formatter_for("json"))
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        logger.exception("job 3: failed to run")
    (line,) = stream.getvalue().splitlines()
    assert "RuntimeError: boom" in json.loads(line)["exception"]


def test_text_lines_show_the_ids_after_the_message(lines: Lines) -> None:
    logger, stream, handler = lines
    handler.setFormatter(formatter_for("text"))
    with log_context(request_id="abc", job_id=5):
        logger.info("hello")
    logger.info("plain")
    first, second = stream.getvalue().splitlines()
    assert first.endswith("ciserver.test_log_format INFO hello [request_id=abc job_id=5]")
    assert second.endswith("ciserver.test_log_format INFO plain")


def test_configure_logging_gives_the_root_logger_one_handler_in_the_format(
    capsys: pytest.CaptureFixture[str],
) -> None:
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        configure_logging("json")
        configure_logging("json")  # again, as a restarted command would: still one handler
        assert len(root.handlers) == 1
        logging.getLogger("uvicorn.access").info("GET /healthz 200")
        line = capsys.readouterr().err.strip().splitlines()[-1]
        assert json.loads(line)["logger"] == "uvicorn.access"
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])


def test_an_unknown_log_format_names_the_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CISERVER_LOG_FORMAT", "xml")
    with pytest.raises(ValidationError, match="log_format"):
        Settings()
