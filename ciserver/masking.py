"""Masking secret values in a job's output, as it streams, before anything keeps or shows it.

Every occurrence of a value, and of each line (8 bytes or longer) of a multi-line value, since a tty
turns its newlines into CRLF, becomes `[masked]`. Occurrences that overlap are masked together, so
no part of either shows. The output is the same whatever the chunking: a chunk's tail is held back
exactly as long as it could still be the start of a value, so a finished line is not delayed unless
it ends like the beginning of a secret.
"""

from __future__ import annotations

from collections.abc import Iterable

MASK = b"[masked]"
# A line of a multi-line value is masked on its own only from this length: shorter ones (a blank
# line, "-----", a closing brace) would mangle unrelated output.
MIN_LINE = 8


def patterns_of(values: Iterable[str]) -> list[bytes]:
    """The byte strings to hide for `values`, longest first."""
    found: set[bytes] = set()
    for value in values:
        whole = value.strip("\r\n").encode()
        if whole:
            found.add(whole)
        if b"\n" in whole:
            found.update(line for raw in whole.split(b"\n") if len(line := raw.rstrip(b"\r")) >= MIN_LINE)
    return sorted(found, key=len, reverse=True)


class Masker:
    """Feed it output in any chunks; what comes out never shows a value."""

    def __init__(self, values: Iterable[str]) -> None:
        self.patterns = patterns_of(values)
        self._held = b""  # bytes not yet given out whole: they may begin a value
        self._masked = 0  # how many of them the last `[masked]` already covers

    def feed(self, data: bytes) -> bytes:
        if not self.patterns:
            return data
        buf = self._held + data
        return self._emit(buf, self._partial_start(buf))

    def flush(self) -> bytes:
        """The rest, at the end of the output: nothing can continue a value any more."""
        buf = self._held
        return self._emit(buf, len(buf))

    def _partial_start(self, buf: bytes) -> int:
        """Where the earliest tail of `buf` that is a proper prefix of a value begins (len: none)."""
        start = len(buf)
        for p in self.patterns:
            i = buf.find(p[:1], max(0, len(buf) - len(p) + 1), start)
            while i != -1:
                if p.startswith(buf[i:]):
                    start = i
                    break
                i = buf.find(p[:1], i + 1, start)
        return start

    def _emit(self, buf: bytes, limit: int) -> bytes:
        """Mask every occurrence starting before `limit` (all are whole there) and give out up to it."""
        out: list[bytes] = []
        done = self._masked  # buf[:done] has been given out (as part of a `[masked]`)
        for start, end in self._occurrences(buf, limit):
            if start < done:  # overlaps the mask just given: it grows
                done = max(done, end)
                continue
            out += (buf[done:start], MASK)
            done = end
        if done < limit:
            out.append(buf[done:limit])
            done = limit
        self._held, self._masked = buf[limit:], done - limit
        return b"".join(out)

    def _occurrences(self, buf: bytes, limit: int) -> list[tuple[int, int]]:
        spans: list[tuple[int, int]] = []
        for p in self.patterns:
            i = buf.find(p, 0)
            while -1 < i < limit:
                spans.append((i, i + len(p)))
                i = buf.find(p, i + 1)
        spans.sort()
        return spans


def mask_text(text: str, values: Iterable[str]) -> str:
    """`text` with every value masked: for messages kept outside the log, such as a job's error."""
    masker = Masker(values)
    data = masker.feed(text.encode(errors="surrogateescape")) + masker.flush()
    return data.decode(errors="surrogateescape")
