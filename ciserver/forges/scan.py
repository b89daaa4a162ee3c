"""The repository names a webhook body may be for, found in its raw bytes before anything parses it.

On the shared URL (`/webhooks/github`) the server must know whose secret to check a signature with,
and that name is inside the body. Parsing a body nobody has vouched for lets anyone spend the API's
CPU and memory (25 MiB of nested arrays take seconds and over a gigabyte), so the body is only
searched for the key the forge names the repository with: a byte search (as fast as reading the
body), then a bounded look at what follows each of the first few places found. The parsed payload
must later name the repository whose secret verified it, so a name found here by mistake is
refused, never built.
"""

from __future__ import annotations

import json
import re

MAX_CANDIDATES = 4
MAX_PLACES = 16  # places where the key is looked at; real payloads have one to three
# A registrable name (255 ASCII characters) fits even with every character escaped ("\u0041": 6 bytes).
_MAX_VALUE = 2048
# After the key: a colon and a JSON string; possessive, so a failed look never backtracks.
_VALUE = re.compile(rb'\s*+:\s*+("(?:[^"\\\x00-\x1f]|\\.)*+")')


def string_values(body: bytes, key: str, limit: int = MAX_CANDIDATES) -> list[str]:
    """The first `limit` distinct (ignoring case) string values of `key` in the JSON `body`.

    The key is searched with its quotes: inside a JSON string a quote is escaped, so text in a
    commit message never matches.
    """
    needle = json.dumps(key).encode()
    found: dict[str, str] = {}
    start = 0
    for _ in range(MAX_PLACES):
        at = body.find(needle, start)
        if at < 0:
            break
        start = at + len(needle)
        match = _VALUE.match(body, start, start + _MAX_VALUE + 64)
        if match is None:
            continue
        try:
            value = json.loads(match.group(1))
        except ValueError:  # an invalid escape or UTF-8: not a name any project has
            continue
        found.setdefault(value.lower(), value)
        if len(found) == limit:
            break
    return list(found.values())
