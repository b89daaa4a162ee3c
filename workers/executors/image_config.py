"""The image configuration a Dockerfile stage builds up (Docker's image `Config`: Env, Cmd,
Entrypoint, WorkingDir, User, ExposedPorts, Labels, Volumes, ...) and the ARGs in scope, changed
instruction by instruction as the classic builder changes them.

Pure: the image builder (docker_build) runs RUN, COPY and ADD; everything else only changes the
configuration here and costs no container.
"""

from __future__ import annotations

import copy
import posixpath
import re
import shlex
from collections.abc import Mapping
from typing import Any

from workers.executors.dockerfile import Instruction, parse_exec_form
from workers.executors.dockerfile_words import expand, expand_words, key_values

DEFAULT_SHELL = ["/bin/sh", "-c"]
DEFAULT_PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# Usable in RUN without an ARG, as in Docker; never kept in the image.
PROXY_ARGS = frozenset(
    name
    for base in ("HTTP_PROXY", "HTTPS_PROXY", "FTP_PROXY", "NO_PROXY", "ALL_PROXY")
    for name in (base, base.lower())
)
_POSIX_SHELLS = frozenset({"sh", "bash", "dash", "ash", "ksh", "mksh", "zsh"})
_DURATION = re.compile(r"(?:(\d+(?:\.\d+)?)(h|ms|us|ns|m|s))+")
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(h|ms|us|ns|m|s)")
_NANOSECONDS = {"h": 3600e9, "m": 60e9, "s": 1e9, "ms": 1e6, "us": 1e3, "ns": 1.0}
_PORT = re.compile(r"(\d{1,5})(?:-(\d{1,5}))?(?:/(tcp|udp|sctp))?")


class StageState:
    """One stage's configuration and ARGs while it is built."""

    def __init__(self, config: Mapping[str, Any] | None, escape: str) -> None:
        self.config: dict[str, Any] = copy.deepcopy(dict(config or {}))
        self.escape = escape
        self.args: dict[str, str] = {}  # ARGs in scope that have a value
        self.cmd_set = False  # CMD given in this stage: ENTRYPOINT then keeps it
        if not any(item.startswith("PATH=") for item in self.config.get("Env") or []):
            self.config["Env"] = [DEFAULT_PATH, *(self.config.get("Env") or [])]

    # -- what RUN and the other instructions see ------------------------------------------------

    def env(self) -> dict[str, str]:
        pairs = (item.partition("=") for item in self.config.get("Env") or [])
        return {key: value for key, _, value in pairs}

    def variables(self) -> dict[str, str]:
        """What `$NAME` means in this stage: ENV wins over ARG, as in Docker."""
        return {**self.args, **self.env()}

    def expand(self, instruction: Instruction, text: str) -> str:
        try:
            return expand(text, self.variables(), self.escape)
        except ValueError as exc:
            raise instruction.error(str(exc)) from None

    def expand_words(self, instruction: Instruction, text: str) -> list[str]:
        try:
            return expand_words(text, self.variables(), self.escape)
        except ValueError as exc:
            raise instruction.error(str(exc)) from None

    @property
    def workdir(self) -> str:
        return self.config.get("WorkingDir") or "/"

    @property
    def user(self) -> str:
        return self.config.get("User") or ""

    def run_command(
        self, instruction: Instruction, given: Mapping[str, str]
    ) -> tuple[list[str], dict[str, str]]:
        """What a RUN executes, and the variables its container needs on top of ENV.

        ARG values are not to stay in the image, nor reach a later stage built on this one. With a
        POSIX shell the command exports them itself; otherwise (exec form, another shell) they go in
        the container's environment, which a step's commit keeps in its image (the final image gets
        its configuration written whole)."""
        env = self.env()
        wanted = {name: value for name, value in self.args.items() if name not in env}
        wanted |= {name: value for name, value in given.items() if name in PROXY_ARGS and name not in env}
        if instruction.exec_form is not None:
            if not instruction.exec_form:
                raise instruction.error("an empty exec form runs nothing")
            return list(instruction.exec_form), wanted
        shell = list(self.config.get("Shell") or DEFAULT_SHELL)
        if not instruction.args.strip():
            raise instruction.error("needs a command")
        if wanted and posixpath.basename(shell[0]) in _POSIX_SHELLS and shell[-1] == "-c":
            exports = " ".join(f"{name}={shlex.quote(value)}" for name, value in sorted(wanted.items()))
            return [*shell, f"export {exports}; {instruction.args}"], {}
        return [*shell, instruction.args], wanted

    # -- instructions that only change the configuration ---------------------------------------

    def declare(
        self, instruction: Instruction, given: Mapping[str, str], outer: Mapping[str, str]
    ) -> list[str]:
        """ARG: in scope from here with the build arg's value, else its default, else the value of
        an ARG of the same name before the first FROM. Returns the names declared."""
        names = []
        for name, default in self._arg_pairs(instruction):
            names.append(name)
            if name in given:
                self.args[name] = given[name]
            elif default is not None:
                self.args[name] = self.expand(instruction, default)
            elif name in outer:
                self.args[name] = outer[name]
        return names

    def _arg_pairs(self, instruction: Instruction) -> list[tuple[str, str | None]]:
        pairs: list[tuple[str, str | None]] = []
        for word in instruction.args.split():
            name, equals, default = word.partition("=")
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
                raise instruction.error(f"invalid name {name[:60]!r}")
            pairs.append((name, default if equals else None))
        if not pairs:
            raise instruction.error("needs a name")
        return pairs

    def apply(self, instruction: Instruction) -> None:
        """Change the configuration as ENV, LABEL, EXPOSE, USER, WORKDIR, VOLUME, STOPSIGNAL, CMD,
        ENTRYPOINT, SHELL, HEALTHCHECK, ONBUILD or MAINTAINER says."""
        handler = getattr(self, f"_{instruction.keyword.lower()}", None)
        if handler is None:
            raise instruction.error("is not a configuration instruction")
        handler(instruction)

    def _pairs(self, instruction: Instruction) -> list[tuple[str, str]]:
        try:
            raw = key_values(instruction.args, self.escape)
        except ValueError as exc:
            raise instruction.error(str(exc)) from None
        return [(self.expand(instruction, key), self.expand(instruction, value)) for key, value in raw]

    def _env(self, instruction: Instruction) -> None:
        env = self.env()
        for key, value in self._pairs(instruction):  # all see the values from before this ENV
            if not re.fullmatch(r"[^=\s]+", key):
                raise instruction.error(f"invalid variable name {key[:60]!r}")
            env[key] = value
        self.config["Env"] = [f"{key}={value}" for key, value in env.items()]

    def _label(self, instruction: Instruction) -> None:
        labels = dict(self.config.get("Labels") or {})
        labels.update(self._pairs(instruction))
        self.config["Labels"] = labels

    def _maintainer(self, instruction: Instruction) -> None:
        self.config["Labels"] = {**(self.config.get("Labels") or {}), "maintainer": instruction.args}

    def _expose(self, instruction: Instruction) -> None:
        ports = dict(self.config.get("ExposedPorts") or {})
        for word in self.expand_words(instruction, instruction.args):
            match = _PORT.fullmatch(word)
            if not match:
                raise instruction.error(f"invalid port {word[:40]!r} (write 8000 or 8000/udp)")
            low = int(match.group(1))
            high = int(match.group(2) or low)
            if not 0 < low <= high < 65536:
                raise instruction.error(f"invalid port range {word!r}")
            for port in range(low, high + 1):
                ports[f"{port}/{match.group(3) or 'tcp'}"] = {}
        self.config["ExposedPorts"] = ports

    def _user(self, instruction: Instruction) -> None:
        user = self.expand(instruction, instruction.args).strip()
        if not user:
            raise instruction.error("needs a user")
        self.config["User"] = user

    def _workdir(self, instruction: Instruction) -> None:
        path = self.expand(instruction, instruction.args).strip()
        if not path:
            raise instruction.error("needs a path")
        self.config["WorkingDir"] = posixpath.normpath(posixpath.join(self.workdir, path))

    def _volume(self, instruction: Instruction) -> None:
        paths = (
            list(instruction.exec_form)
            if instruction.exec_form is not None
            else self.expand_words(instruction, instruction.args)
        )
        if not paths or any(not path.strip() for path in paths):
            raise instruction.error("needs one or more paths")
        self.config["Volumes"] = {**(self.config.get("Volumes") or {}), **{path: {} for path in paths}}

    def _stopsignal(self, instruction: Instruction) -> None:
        self.config["StopSignal"] = self.expand(instruction, instruction.args).strip()

    def _command(self, instruction: Instruction) -> list[str]:
        if instruction.exec_form is not None:
            return list(instruction.exec_form)
        return [*(self.config.get("Shell") or DEFAULT_SHELL), instruction.args]

    def _cmd(self, instruction: Instruction) -> None:
        self.config["Cmd"] = self._command(instruction)
        self.cmd_set = True

    def _entrypoint(self, instruction: Instruction) -> None:
        self.config["Entrypoint"] = self._command(instruction)
        if not self.cmd_set:
            self.config["Cmd"] = None  # an ENTRYPOINT resets the CMD the base image had

    def _shell(self, instruction: Instruction) -> None:
        if not instruction.exec_form:
            raise instruction.error('needs the JSON form, e.g. SHELL ["/bin/bash", "-c"]')
        self.config["Shell"] = list(instruction.exec_form)

    def _onbuild(self, instruction: Instruction) -> None:
        trigger = instruction.args.strip()
        if trigger.split(" ", 1)[0].upper() in ("ONBUILD", "FROM", "MAINTAINER", ""):
            raise instruction.error(f"{trigger.split(' ', 1)[0] or 'nothing'} is not allowed as a trigger")
        self.config["OnBuild"] = [*(self.config.get("OnBuild") or []), trigger]

    def _healthcheck(self, instruction: Instruction) -> None:
        words = instruction.args.split(None, 1)
        kind = words[0].upper() if words else ""
        if kind == "NONE" and len(words) == 1 and not instruction.flags:
            self.config["Healthcheck"] = {"Test": ["NONE"]}
            return
        if kind != "CMD" or len(words) < 2:
            raise instruction.error("expected HEALTHCHECK NONE or HEALTHCHECK [options] CMD command")
        command = words[1]
        exec_form = parse_exec_form(command)
        check: dict[str, Any] = {"Test": ["CMD", *exec_form] if exec_form else ["CMD-SHELL", command]}
        for flag, key in (("interval", "Interval"), ("timeout", "Timeout"), ("start-period", "StartPeriod")):
            if flag in instruction.flags:
                check[key] = _duration(instruction, flag, instruction.flags[flag])
        if "retries" in instruction.flags:
            retries = instruction.flags["retries"]
            if not retries.isdigit() or int(retries) < 1:
                raise instruction.error(f"--retries must be a number above 0, not {retries!r}")
            check["Retries"] = int(retries)
        self.config["Healthcheck"] = check


def _duration(instruction: Instruction, flag: str, value: str) -> int:
    """A Go duration (`30s`, `1m30s`, `500ms`) in nanoseconds, as Docker keeps it."""
    if not _DURATION.fullmatch(value):
        raise instruction.error(f"--{flag}: {value!r} is not a duration like 30s or 1m30s")
    return int(sum(float(number) * _NANOSECONDS[unit] for number, unit in _DURATION_PART.findall(value)))
