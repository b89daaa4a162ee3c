"""Dockerfiles read as Docker's classic builder reads them: parser directives, continuation lines,
comments, instructions with their flags and exec (JSON) or shell form, split into stages.

Pure: no Docker, no files. The image builder (docker_build) runs the stages; the word and variable
rules it needs are in dockerfile_words. Errors name the Dockerfile's line.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

KEYWORDS = frozenset(
    {
        "ADD",
        "ARG",
        "CMD",
        "COPY",
        "ENTRYPOINT",
        "ENV",
        "EXPOSE",
        "FROM",
        "HEALTHCHECK",
        "LABEL",
        "MAINTAINER",
        "ONBUILD",
        "RUN",
        "SHELL",
        "STOPSIGNAL",
        "USER",
        "VOLUME",
        "WORKDIR",
    }
)
# Flags each instruction takes; the classic builder knows no others (--mount, --link, --chmod are
# BuildKit's), and refusing them is better than building something else than was asked.
FLAGS = {
    "FROM": frozenset({"platform"}),
    "COPY": frozenset({"from", "chown"}),
    "ADD": frozenset({"chown"}),
    "HEALTHCHECK": frozenset({"interval", "timeout", "start-period", "retries"}),
}
MAX_DOCKERFILE = 1024 * 1024

_DIRECTIVE = re.compile(r"#\s*([A-Za-z][A-Za-z0-9_]*)\s*=\s*(.*?)\s*")
_FLAG = re.compile(r"--([a-z][a-z-]*)(?:=(\S*))?")


class DockerfileError(Exception):
    """A Dockerfile the builder cannot read or does not support; the message names the line."""

    def __init__(self, line: int | None, message: str) -> None:
        super().__init__(f"Dockerfile:{line}: {message}" if line else f"Dockerfile: {message}")
        self.line = line


@dataclass(frozen=True)
class Instruction:
    """One instruction, continuation lines joined; `exec_form` is set when the arguments are a JSON
    array of strings (`CMD ["a", "b"]`), `args` holds them as written either way."""

    line: int
    keyword: str
    args: str
    flags: dict[str, str] = field(default_factory=dict)
    exec_form: tuple[str, ...] | None = None
    text: str = ""  # the instruction as written, for the build log

    def error(self, message: str) -> DockerfileError:
        return DockerfileError(self.line, f"{self.keyword}: {message}")


@dataclass(frozen=True)
class Stage:
    """FROM up to the next FROM."""

    index: int
    name: str | None  # `AS name`, lower-cased as the builder compares it
    base: str  # the image or stage named in FROM, variables not yet expanded
    start: Instruction
    instructions: tuple[Instruction, ...]


@dataclass(frozen=True)
class Dockerfile:
    escape: str
    global_args: tuple[Instruction, ...]  # ARGs before the first FROM: usable in FROM lines
    stages: tuple[Stage, ...]

    @property
    def steps(self) -> int:
        return len(self.global_args) + sum(1 + len(stage.instructions) for stage in self.stages)


def parse_dockerfile(text: str) -> Dockerfile:
    """The Dockerfile's instructions and stages; DockerfileError for what the classic builder refuses."""
    if len(text) > MAX_DOCKERFILE:
        raise DockerfileError(None, f"larger than {MAX_DOCKERFILE:,} bytes")
    lines = text.splitlines()
    escape, first = _directives(lines)
    instructions = list(_instructions(lines, first, escape))
    return _stages(instructions, escape)


def _directives(lines: list[str]) -> tuple[str, int]:
    """`# escape=` and `# syntax=` at the very top; the first line that is not one ends them."""
    escape = "\\"
    for number, line in enumerate(lines):
        match = _DIRECTIVE.fullmatch(line.strip())
        if not match:
            return escape, number
        name, value = match.group(1).lower(), match.group(2)
        if name == "escape":
            if value not in ("\\", "`"):
                raise DockerfileError(number + 1, f"invalid escape token {value!r}: use \\ or `")
            escape = value
        elif name != "syntax":
            return escape, number  # not a directive: an ordinary comment
    return escape, len(lines)


def _instructions(lines: list[str], first: int, escape: str) -> list[Instruction]:
    found = []
    number = first
    while number < len(lines):
        line = lines[number].strip()
        start = number
        number += 1
        if not line or line.startswith("#"):
            continue
        joined, ends = _strip_continuation(line, escape)
        while not ends and number < len(lines):
            following = lines[number]
            number += 1
            if following.lstrip().startswith("#") or not following.strip():
                continue  # comments and empty lines inside a continued instruction are dropped
            part, ends = _strip_continuation(following, escape)
            joined += part
        found.append(_instruction(start + 1, joined))
    return found


def _strip_continuation(line: str, escape: str) -> tuple[str, bool]:
    """The line without a trailing escape character, and whether the instruction ends here."""
    stripped = line.rstrip()
    if stripped.endswith(escape):
        return stripped[: -len(escape)], False
    return line, True


def _instruction(line: int, text: str) -> Instruction:
    keyword, _, rest = text.strip().partition(" ")
    if "\t" in keyword:
        keyword, _, more = keyword.partition("\t")
        rest = f"{more} {rest}"
    keyword = keyword.upper()
    if keyword not in KEYWORDS:
        raise DockerfileError(line, f"unknown instruction: {keyword[:40]}")
    flags, rest = _flags(line, keyword, rest.strip())
    return Instruction(
        line=line, keyword=keyword, args=rest, flags=flags, exec_form=parse_exec_form(rest), text=text.strip()
    )


def _flags(line: int, keyword: str, rest: str) -> tuple[dict[str, str], str]:
    flags: dict[str, str] = {}
    allowed = FLAGS.get(keyword, frozenset())
    while rest.startswith("--"):
        word, _, after = rest.partition(" ")
        match = _FLAG.fullmatch(word)
        if not match or match.group(2) is None:
            raise DockerfileError(line, f"{keyword}: flag {word[:60]!r} is not --name=value")
        if match.group(1) not in allowed:
            known = ", ".join(f"--{name}" for name in sorted(allowed)) or "none"
            raise DockerfileError(
                line,
                f"{keyword}: flag --{match.group(1)} is not supported by this builder "
                f"(the classic Dockerfile syntax; {keyword} takes {known})",
            )
        flags[match.group(1)] = match.group(2)
        rest = after.lstrip()
    return flags, rest


def parse_exec_form(rest: str) -> tuple[str, ...] | None:
    """The JSON array of strings `rest` is, or None for the shell form."""
    if not rest.startswith("["):
        return None
    try:
        value = json.loads(rest)
    except ValueError:
        return None  # not JSON: the shell form, as Docker reads it too
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return tuple(value)
    return None


def _stages(instructions: list[Instruction], escape: str) -> Dockerfile:
    global_args: list[Instruction] = []
    stages: list[Stage] = []
    current: list[Instruction] = []
    start: Instruction | None = None
    for instruction in instructions:
        if instruction.keyword == "FROM":
            if start is not None:
                stages.append(_stage(len(stages), start, current))
            start, current = instruction, []
        elif start is None:
            if instruction.keyword != "ARG":
                raise instruction.error("only ARG may come before the first FROM")
            global_args.append(instruction)
        else:
            current.append(instruction)
    if start is None:
        raise DockerfileError(None, "no FROM instruction")
    stages.append(_stage(len(stages), start, current))
    names = [stage.name for stage in stages if stage.name]
    duplicate = next((name for name in names if names.count(name) > 1), None)
    if duplicate:
        raise DockerfileError(None, f"two stages are named {duplicate!r}")
    return Dockerfile(escape=escape, global_args=tuple(global_args), stages=tuple(stages))


def _stage(index: int, start: Instruction, instructions: list[Instruction]) -> Stage:
    words = start.args.split()
    if len(words) == 3 and words[1].lower() == "as":
        name: str | None = words[2].lower()
        if not re.fullmatch(r"[a-z][a-z0-9._-]*", name):
            raise start.error(f"invalid stage name {words[2]!r}")
    elif len(words) == 1:
        name = None
    else:
        raise start.error("expected FROM <image> [AS <name>]")
    return Stage(index=index, name=name, base=words[0], start=start, instructions=tuple(instructions))


def stages_needed(dockerfile: Dockerfile, target: str | None) -> list[Stage]:
    """The stages the target (default: the last) depends on through FROM and COPY --from, in order:
    a stage nothing needs is not built."""
    stages = dockerfile.stages
    if target is None:
        last = stages[-1]
    else:
        found = next((stage for stage in stages if stage.name == target.lower()), None)
        if found is None:
            known = ", ".join(stage.name for stage in stages if stage.name) or "none"
            raise DockerfileError(None, f"target stage {target!r} is not in the Dockerfile (stages: {known})")
        last = found
    needed = {last.index}
    for stage in reversed(stages[: last.index + 1]):
        if stage.index not in needed:
            continue
        references = [stage.base] + [
            i.flags["from"] for i in stage.instructions if i.keyword == "COPY" and "from" in i.flags
        ]
        if any("$" in reference for reference in references):
            needed.update(range(stage.index))  # named through a variable: keep every earlier stage
            continue
        for reference in references:
            earlier = stage_named(stages[: stage.index], reference)
            if earlier is not None:
                needed.add(earlier.index)
    return [stage for stage in stages if stage.index in needed]


def stage_named(stages: tuple[Stage, ...] | list[Stage], reference: str) -> Stage | None:
    """The earlier stage `reference` names (by `AS` name or by number), or None for an image."""
    lowered = reference.lower()
    for stage in stages:
        if stage.name == lowered or (reference.isdigit() and int(reference) == stage.index):
            return stage
    return None
