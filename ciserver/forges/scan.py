"""The repository names a webhook body may be for, found in its raw bytes before anything parses it.

On the shared URL (`/webhooks/github`) the server must know whose secret to check a signature with,
and that name is inside the body. Parsing a body nobody has vouched for lets anyone spend the API's
CPU and memory (25 MiB of nested arrays take seconds and over a gigabyte), so the body is only
scanned for the key the forge names the repository with. The scan is linear in the body, allocates
nothing of its size, and gives at most a few names; the parsed payload must later name the same
repository that verified it, so a name the scan got wrong is refused, never built.
"""

from __future__ import annotations

import json
import re
from functools import lru_cache

MAX_CANDIDATES = 4
# A repository path fits the projects table (255); escapes may make its JSON text longer.
_MAX_VALUE = 1024


@lru_cache(maxsize=8)
def _pattern(key: str) -> re.Pattern[bytes]:
    # The key with its quotes: in a JSON string a quote is escaped, so text inside a commit message
    # never matches. The value is a JSON string of bounded length; escapes are decoded below.
    quoted = re.escape(json.dumps(key).encode())
    return re.compile(quoted + rb'\s*:\s*("(?:[^"\\\x00-\x1f]|\\.){1,%d}")' % _MAX_VALUE)


def string_values(body: bytes, key: str, limit: int = MAX_CANDIDATES) -> list[str]:
    """The first `limit` distinct (ignoring case) string values of `key` anywhere in the JSON `body`."""
    found: dict[str, str] = {}
    for match in _pattern(key).finditer(body):
        try:
            value = json.loads(match.group(1))
        except ValueError:  # an invalid escape or UTF-8: not a name any project has
            continue
        found.setdefault(value.lower(), value)
        if len(found) == limit:
            break
    return list(found.values())
