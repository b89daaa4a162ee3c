"""Sizes and durations as people write them in settings and pipeline files ("512m", "7d")."""

from __future__ import annotations

import re
from typing import Any

_SIZE = re.compile(r"([0-9]{1,15})\s*([kmgt]?)(?:i?b)?", re.IGNORECASE)
_SIZE_UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}
_DURATION = re.compile(r"(?:([0-9]{1,9})d)?(?:([0-9]{1,9})h)?(?:([0-9]{1,9})m)?(?:([0-9]{1,9})s)?")


def parse_size(value: Any) -> int:
    """Bytes from an int or "512m", "2g", "64k", "1GiB" (binary units, as Docker reads them)."""
    if isinstance(value, int) and not isinstance(value, bool):
        if value < 0:
            raise ValueError(f"a size must not be negative, not {value}")
        return value
    match = _SIZE.fullmatch(value.strip()) if isinstance(value, str) else None
    if not match:
        raise ValueError(f"invalid size {value!r} (use bytes or a number with k, m, g: 512m, 2g)")
    return int(match.group(1)) * _SIZE_UNITS[match.group(2).lower()]


def parse_duration(value: Any) -> int:
    """Seconds from an int or "90s", "10m", "1h30m", "7d"."""
    if isinstance(value, str) and value.isdigit():
        value = int(value)
    if isinstance(value, int) and not isinstance(value, bool):
        if value < 0:
            raise ValueError(f"a duration must not be negative, not {value}")
        return value
    match = _DURATION.fullmatch(value) if isinstance(value, str) and value else None
    if not match:
        raise ValueError(f"invalid duration {value!r} (use 90s, 10m, 1h30m, 7d or seconds)")
    days, hours, minutes, seconds = (int(group or 0) for group in match.groups())
    return ((days * 24 + hours) * 60 + minutes) * 60 + seconds


def format_duration(seconds: int) -> str:
    """90 -> "1m30s", 7200 -> "2h": the way people write durations in pipeline files."""
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [f"{hours}h" if hours else "", f"{minutes}m" if minutes else "", f"{secs}s" if secs else ""]
    return "".join(parts) or "0s"
