"""Text a pusher wrote (branch names, commit messages, job names, log lines), made safe to print on a
terminal, and the short forms of times the client's tables use.

A terminal obeys escape sequences wherever they come from: one in a branch name could retitle the
window, rewrite the lines above, or (OSC 52) fill the clipboard. So a field becomes one line of
printable text, and a log keeps only its colours (SGR), newlines, tabs and carriage returns.
"""

from __future__ import annotations

import re
import unicodedata
from datetime import UTC, datetime

_ESCAPE = re.compile(
    r"\x1b\[[0-?]*[ -/]*[@-~]"  # CSI
    r"|\x1b[\]PX^_][^\x07\x1b]*(?:\x07|\x1b\\)?"  # OSC, DCS, SOS, PM, APC up to BEL or ST
    r"|\x1b[ -~]?"  # any other escape, or a lone one
    r"|\x9b[0-?]*[ -/]*[@-~]"  # C1 CSI
)
_SGR = re.compile(r"\x1b\[[0-9;:]*m")


def _unsafe(char: str) -> bool:
    """Control characters, and format characters such as the bidirectional overrides."""
    return unicodedata.category(char) in ("Cc", "Cf")


def field(text: object, limit: int = 200) -> str:
    """One line of printable text from any value: escape sequences removed, other controls shown as
    `?`, cut to `limit` characters with an ellipsis."""
    plain = _ESCAPE.sub("", "" if text is None else str(text))
    plain = "".join("?" if _unsafe(c) and c not in "\t\n" else c for c in plain)
    plain = " ".join(plain.split())
    return plain if len(plain) <= limit else plain[: limit - 1] + "…"


def log_text(text: str, *, colour: bool) -> str:
    """A log chunk for a terminal: its colours kept (unless `colour` is off), newlines, tabs and
    carriage returns kept, every other escape sequence and control character removed."""

    def keep(match: re.Match[str]) -> str:
        return match.group(0) if colour and _SGR.fullmatch(match.group(0)) else ""

    return "".join(c for c in _ESCAPE.sub(keep, text) if c in "\n\t\r\x1b" or not _unsafe(c))


def parse_time(value: str | None) -> datetime | None:
    """A time the API gave (ISO 8601); naive times are UTC, as the server writes them."""
    if not value:
        return None
    moment = datetime.fromisoformat(value)
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def span(seconds: float) -> str:
    """A length of time the way a person reads it at a glance: 0.8s, 42s, 3m05s, 2h10m, 4d."""
    if seconds < 10:
        return f"{max(seconds, 0):.1f}s"
    whole = int(seconds)
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    if whole < 86400:
        return f"{whole // 3600}h{whole % 3600 // 60:02d}m"
    return f"{whole // 86400}d"


def age(value: str | None, now: datetime | None = None) -> str:
    """How long ago `value` was, `-` when it is unknown."""
    moment = parse_time(value)
    if moment is None:
        return "-"
    return span(((now or datetime.now(UTC)) - moment).total_seconds())


def duration(started: str | None, finished: str | None, now: datetime | None = None) -> str:
    """How long something ran (up to now while it runs), `-` before it started."""
    start = parse_time(started)
    if start is None:
        return "-"
    end = parse_time(finished) or now or datetime.now(UTC)
    return span((end - start).total_seconds())
