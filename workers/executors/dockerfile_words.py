"""Words and variables in a Dockerfile, by the rules of Docker's own shell-word lexer: quotes, the
escape character, `$NAME`, `${NAME}`, `${NAME:-word}` and `${NAME:+word}`; an unset variable is
empty. Substituted values split into words unless quoted, as in Docker's ProcessWords.

Pure and small; errors are ValueError with the reason, which the builder reports at the line.
"""

from __future__ import annotations

from collections.abc import Mapping

_SPECIAL = "@*#?-$!0"


class _Words:
    """Collects characters into words: raw characters never split, plain whitespace does."""

    def __init__(self) -> None:
        self.words: list[str] = []
        self.current: list[str] = []
        self.in_word = False

    def char(self, ch: str) -> None:
        if ch.isspace():
            if self.in_word:
                self.words.append("".join(self.current))
                self.current, self.in_word = [], False
        else:
            self.raw(ch)

    def raw(self, text: str) -> None:
        self.current.append(text)
        self.in_word = True

    def done(self) -> list[str]:
        if self.in_word:
            self.words.append("".join(self.current))
        return self.words


class _Lexer:
    def __init__(self, text: str, variables: Mapping[str, str], escape: str) -> None:
        self.text, self.variables, self.escape = text, variables, escape
        self.position = 0

    def peek(self) -> str:
        return self.text[self.position] if self.position < len(self.text) else ""

    def next(self) -> str:
        ch = self.peek()
        self.position += 1
        return ch

    def process(self, stop: str = "") -> tuple[str, list[str]]:
        """The text up to `stop` (or the end): as one word, and split into words."""
        result: list[str] = []
        words = _Words()
        while self.peek():
            ch = self.peek()
            if stop and ch == stop:
                self.next()
                return "".join(result), words.done()
            if ch == "'":
                value = self._single_quoted()
                result.append(value)
                words.raw(value)
            elif ch == '"':
                value = self._double_quoted()
                result.append(value)
                words.raw(value)
            elif ch == "$":
                value = self._dollar()
                result.append(value)
                for each in value:
                    words.char(each)
            else:
                ch = self.next()
                if ch == self.escape:
                    ch = self.next()
                    if not ch:
                        break  # an escape at the very end is dropped
                    words.raw(ch)
                else:
                    words.char(ch)
                result.append(ch)
        if stop:
            raise ValueError("syntax error: missing '}'")
        return "".join(result), words.done()

    def _single_quoted(self) -> str:
        self.next()
        end = self.text.find("'", self.position)
        if end == -1:
            raise ValueError("unexpected end of statement while looking for matching single-quote")
        value = self.text[self.position : end]
        self.position = end + 1
        return value

    def _double_quoted(self) -> str:
        self.next()
        result = []
        while True:
            ch = self.peek()
            if not ch:
                raise ValueError("unexpected end of statement while looking for matching double-quote")
            if ch == '"':
                self.next()
                return "".join(result)
            if ch == "$":
                result.append(self._dollar())
                continue
            ch = self.next()
            if ch == self.escape and self.peek() in ('"', "$", self.escape) and self.peek():
                ch = self.next()
            elif ch == self.escape and not self.peek():
                continue
            result.append(ch)

    def _name(self) -> str:
        start = self.position
        if self.peek().isdigit():
            while self.peek().isdigit():
                self.next()
            return self.text[start : self.position]
        if self.peek() and self.peek() in _SPECIAL:
            return self.next()
        while self.peek() and (self.peek().isalnum() or self.peek() == "_"):
            self.next()
        return self.text[start : self.position]

    def _dollar(self) -> str:
        self.next()
        if self.peek() != "{":
            name = self._name()
            return self.variables.get(name, "") if name else "$"
        self.next()
        if not self.peek():
            raise ValueError("syntax error: missing '}'")
        if self.peek() in "{}:":
            raise ValueError("syntax error: bad substitution")
        name = self._name()
        ch = self.next()
        if ch == "}":
            return self.variables.get(name, "")
        if ch != ":":
            raise ValueError(f"missing ':' in substitution of {name!r}")
        modifier = self.next()
        word, _ = self.process(stop="}")
        value = self.variables.get(name, "")
        if modifier == "-":
            return value or word
        if modifier == "+":
            return word if value else value
        raise ValueError(f"unsupported modifier ({modifier}) in substitution of {name!r}")


def expand(text: str, variables: Mapping[str, str], escape: str = "\\") -> str:
    """`text` as one word: quotes removed, escapes applied, variables substituted."""
    return _Lexer(text, variables, escape).process()[0]


def expand_words(text: str, variables: Mapping[str, str], escape: str = "\\") -> list[str]:
    """`text` split into words on unquoted whitespace, after substitution."""
    return _Lexer(text, variables, escape).process()[1]


def raw_words(text: str, escape: str = "\\") -> list[str]:
    """Split on whitespace outside quotes, keeping quotes and escapes (for `key=value` lists)."""
    words: list[str] = []
    current: list[str] = []
    quote = ""
    escaped = False
    for ch in text:
        if escaped:
            current.append(ch)
            escaped = False
        elif ch == escape and quote != "'":
            current.append(ch)
            escaped = True
        elif quote:
            current.append(ch)
            if ch == quote:
                quote = ""
        elif ch in "'\"":
            current.append(ch)
            quote = ch
        elif ch.isspace():
            if current:
                words.append("".join(current))
                current = []
        else:
            current.append(ch)
    if current:
        words.append("".join(current))
    return words


def key_values(text: str, escape: str = "\\", *, legacy: bool = True) -> list[tuple[str, str]]:
    """`k=v k2="v 2"` (or, with `legacy`, the old `KEY value with spaces`) as raw pairs; each side is
    still to be expanded. ValueError names a word without `=`."""
    words = raw_words(text, escape)
    if not words:
        raise ValueError("needs at least one argument")
    if legacy and "=" not in words[0]:
        key, _, value = text.strip().partition(" ")
        if not value.strip():
            raise ValueError(f"{key} needs a value (KEY=value, or KEY value)")
        return [(key, value.strip())]
    pairs = []
    for word in words:
        key, equals, value = word.partition("=")
        if not equals or not key:
            raise ValueError(f"{word[:60]!r} is not KEY=value")
        pairs.append((key, value))
    return pairs
