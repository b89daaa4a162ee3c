"""`environments:` and `service:`: where a green build's release goes, how traffic moves to it, and
what runs there. The deploy worker reads these back from the release (see ciserver.deploy).
"""

from __future__ import annotations

import ipaddress
import itertools
import re
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BeforeValidator, Field, WithJsonSchema, model_validator

from ciserver.pipeline.fields import (
    Command,
    Env,
    EnvName,
    Image,
    Patterns,
    Script,
    Strict,
    Timeout,
    fail,
    invalid,
)

ENVIRONMENT_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")
_LISTEN = re.compile(r"(?:(\d{1,3}(?:\.\d{1,3}){3})|\[([0-9a-fA-F:.]+)\]|(localhost)):(\d{1,5})")
_HEALTH = re.compile(r"/[\x21-\x7e]{0,1023}")
STRATEGIES = ("recreate", "blue_green", "canary")
DEFAULT_KEEP_PREVIOUS = 600
# Each step of a deploy script: Argo Rollouts' and Kubernetes' default progress deadline.
DEFAULT_DEPLOY_TIMEOUT = 600


def _environment_name(value: str) -> str:
    """The name is part of container names, nginx files and URLs."""
    if not ENVIRONMENT_NAME.fullmatch(value):
        raise invalid(
            "environment",
            f"invalid environment name {value!r} (lowercase letters, digits, '-' and '_', at most 63)",
        )
    return value


def normalize_listen(value: str) -> str:
    """The one spelling of an nginx `listen` address: `127.0.0.01:09001`, `localhost:9001` and
    `127.0.0.1:9001` are one socket to nginx, so all become `127.0.0.1:9001` (IPv6 as `[::1]:9001`).
    ValueError for anything that is not an address and a port."""
    match = _LISTEN.fullmatch(value)
    if not match or not 0 < int(match.group(4)) < 65536:
        raise ValueError(f"invalid listen address {value!r} (write it as 127.0.0.1:9001)")
    dotted, bracketed, _localhost, port = match.groups()
    if dotted is not None:
        # nginx reads each part as a decimal number (never octal), each at most 255.
        parts = [int(part) for part in dotted.split(".")]
        if any(part > 255 for part in parts):
            raise ValueError(f"invalid listen address {value!r} (each part of an IPv4 address is 0-255)")
        host = ".".join(str(part) for part in parts)
    elif bracketed is not None:
        try:
            host = f"[{ipaddress.IPv6Address(bracketed).compressed}]"
        except ValueError:
            raise ValueError(f"invalid listen address {value!r} (not an IPv6 address)") from None
    else:
        host = "127.0.0.1"  # what nginx resolves localhost to
    return f"{host}:{int(port)}"


def listens_overlap(a: str, b: str) -> bool:
    """Whether two listen addresses would compete for one socket: the same address and port, or the
    same port where either is the wildcard address (0.0.0.0 or [::])."""
    host_a, _, port_a = normalize_listen(a).rpartition(":")
    host_b, _, port_b = normalize_listen(b).rpartition(":")
    wildcard = ("0.0.0.0", "[::]")
    return port_a == port_b and (host_a == host_b or host_a in wildcard or host_b in wildcard)


def _listen(value: str) -> str:
    """host:port for nginx's `listen`: an address, not a name nginx would have to resolve."""
    try:
        return normalize_listen(value)
    except ValueError as exc:
        raise invalid("listen", str(exc)) from None


def _health(value: str) -> str:
    if not _HEALTH.fullmatch(value):
        raise invalid("health", f"invalid health path {value!r} (a path starting with '/', no spaces)")
    return value


def _steps(values: list[int]) -> list[int]:
    """Increasing percentages; full promotion (100) ends them even when it is not written."""
    if any(b <= a for a, b in itertools.pairwise(values)):
        raise invalid("steps", f"steps must increase: {values}")
    return values if values[-1] == 100 else [*values, 100]


def _strategy(value: Any) -> Any:
    """`strategy: blue_green` is short for {blue_green: {}}, and `{canary: }` for {canary: {}}."""
    if isinstance(value, str):
        if value not in STRATEGIES:
            raise invalid("strategy", f"unknown strategy {value!r}: use recreate, blue_green or canary")
        return {value: {}}
    if isinstance(value, dict):
        return {key: {} if options is None else options for key, options in value.items()}
    return value


EnvironmentName = Annotated[
    str,
    AfterValidator(_environment_name),
    WithJsonSchema({"type": "string", "pattern": f"^{ENVIRONMENT_NAME.pattern}$"}),
]
Listen = Annotated[str, AfterValidator(_listen), WithJsonSchema({"type": "string", "pattern": r"^\S+:\d+$"})]
Percent = Annotated[int, Field(strict=True, ge=1, le=100)]


class Recreate(Strict):
    """Stop the old version, then start the new one: simple, with downtime between the two."""


class BlueGreen(Strict):
    """Start the new version beside the old, check its health, switch all traffic in one reload."""

    keep_previous: Timeout = DEFAULT_KEEP_PREVIOUS
    """How long the old version keeps running after the switch, so a rollback is one switch back."""


class Canary(Strict):
    """Shift traffic to the new version step by step, analysing its answers between steps."""

    steps: Annotated[list[Percent], Field(min_length=1, max_length=20), AfterValidator(_steps)] = Field(
        default_factory=lambda: [5, 25, 50, 100]
    )
    """Percent of requests sent to the new version at each step (100 is added when not last)."""
    interval: Timeout = 60
    """How long each step lasts before the next: 30s, 5m or seconds."""
    max_error_rate: Annotated[float, Field(ge=0, le=1)] = 0.01
    """Share of 5xx answers from the new version above which it is rolled back (0.01 = 1%)."""
    min_requests: Annotated[int, Field(strict=True, ge=0, le=1_000_000)] = 50
    """Requests below which the rate counts the missing ones as good: 2 errors of 10 requests with 50
    here is a rate of 2/50, not 2/10, so a quiet step is not judged on a handful of answers."""
    keep_previous: Timeout = DEFAULT_KEEP_PREVIOUS
    """How long the old version keeps running after full promotion, for a quick rollback."""


class Strategy(Strict):
    """How a release replaces the one running: exactly one of the keys."""

    recreate: Recreate | None = None
    """Stop old, start new (downtime)."""
    blue_green: BlueGreen | None = None
    """New beside old, one switch (no downtime)."""
    canary: Canary | None = None
    """New beside old, traffic shifted in steps with analysis (no downtime)."""

    @model_validator(mode="after")
    def _one(self) -> Strategy:
        given = [name for name in STRATEGIES if getattr(self, name) is not None]
        if len(given) != 1:
            raise fail("Strategy", [((), "give exactly one of recreate, blue_green, canary", given)])
        return self

    @property
    def kind(self) -> Literal["recreate", "blue_green", "canary"]:
        if self.recreate is not None:
            return "recreate"
        return "blue_green" if self.blue_green is not None else "canary"

    @property
    def keep_previous(self) -> int:
        """Seconds the replaced version stays up after the switch (0 with recreate)."""
        chosen = self.blue_green or self.canary
        return chosen.keep_previous if chosen else 0


_STRATEGY_SCHEMA = {"type": "string", "enum": list(STRATEGIES), "description": "Short for {name: {}}."}


def _strategy_schema(schema: dict[str, Any]) -> None:
    schema["anyOf"] = [_STRATEGY_SCHEMA, {"$ref": schema.pop("$ref")}]


class Environment(Strict):
    """environments.<name>: a place releases are deployed to, in order of `after`."""

    auto: Annotated[bool, Field(strict=True)] = False
    """true: every new release is deployed at once (continuous deployment); false: it waits for
    POST /api/v1/projects/{name}/environments/{env}/promote (continuous delivery)."""
    after: EnvironmentName | None = None
    """A release must have succeeded in this environment first (and with auto, it follows from there)."""
    branches: Patterns | None = None
    """Releases of branches matching these globs are accepted; with neither this nor tags: the
    repository's default branch only."""
    tags: Patterns | None = None
    """Releases of tags matching these globs are accepted."""
    listen: Listen | None = None
    """Where nginx serves the environment, host:port (not with a script deploy)."""
    strategy: Annotated[Strategy, BeforeValidator(_strategy)] = Field(
        default_factory=lambda: Strategy(blue_green=BlueGreen()), json_schema_extra=_strategy_schema
    )
    """recreate, blue_green (default) or {canary: {steps, interval, max_error_rate, min_requests}}."""
    env: Env = Field(default_factory=dict)
    """Variables of the service (or of the deploy script) in this environment, over service.env."""
    secrets: list[EnvName] = Field(default_factory=list)
    """Server-side secrets given to the service or the deploy script as variables."""
    script: Script | None = None
    """Deploy elsewhere (Kubernetes, a PaaS): these commands run in a container at each step, with
    DEPLOY_ENV, DEPLOY_IMAGE, DEPLOY_WEIGHT and DEPLOY_STEP, instead of ciserver starting the service."""
    image: Image | None = None
    """The image the deploy script runs in (default: the top-level image)."""
    timeout: Timeout | None = None
    """How long each step of the deploy script may run before it is stopped and the deployment
    fails: 90s, 10m or seconds (default 10m, at most the server's maximum job timeout)."""

    @model_validator(mode="after")
    def _consistent(self) -> Environment:
        problems = []
        for key in ("image", "timeout"):
            value = getattr(self, key)
            if self.script is None and value is not None:
                problems.append(((key,), f"{key} is the deploy script's: give a script too", value))
        if self.script is not None and self.listen is not None:
            message = "a script deploy routes its own traffic: leave listen out, or the script"
            problems.append((("listen",), message, self.listen))
        if problems:
            raise fail("Environment", problems)
        return self


class DeployedService(Strict):
    """service: what each environment runs, from the release's image."""

    port: Annotated[int, Field(strict=True, ge=1, le=65535)]
    """The port the service listens on inside its container."""
    health: Annotated[str, AfterValidator(_health)] = "/"
    """A path that answers 2xx when the service is ready to receive traffic."""
    health_timeout: Timeout = 60
    """How long a new container may take to become healthy."""
    env: Env = Field(default_factory=dict)
    """Variables of the service's containers."""
    command: Command | None = None
    """Replaces the image's command."""


class DeployConfig(Strict):
    """A release's `environments` and `service` (and the top-level `image`, for deploy scripts), as
    its build stored them (Build.deploy)."""

    image: str | None = None
    environments: dict[EnvironmentName, Environment] = Field(default_factory=dict)
    service: DeployedService | None = None


def environment_problems(
    environments: dict[str, Environment], service: DeployedService | None, image: str | None
) -> list[tuple[tuple[str | int, ...], str, Any]]:
    """What the environments say against each other and the rest of the file, at the key to change."""
    problems: list[tuple[tuple[str | int, ...], str, Any]] = []
    claimed: dict[str, str] = {}
    for name, environment in environments.items():
        at = ("environments", name)
        if environment.after is not None and environment.after not in environments:
            problems.append(((*at, "after"), f"no environment is named {environment.after!r}", None))
        if environment.script is not None:
            if environment.image is None and image is None:
                message = "the deploy script needs an image: give one here or a top-level image"
                problems.append((at, message, None))
            continue
        if environment.listen is None:
            problems.append((at, "give listen (where nginx serves it) or a deploy script", None))
        elif taken := next((other for other in claimed if listens_overlap(other, environment.listen)), None):
            message = f"{environment.listen} is already the address of environment {claimed[taken]!r}"
            problems.append(((*at, "listen"), message, environment.listen))
        else:
            claimed[environment.listen] = name
        if service is None:
            problems.append((at, "deploying needs a top-level service: {port, health}", None))
    return problems + _after_cycles(environments)


def _after_cycles(environments: dict[str, Environment]) -> list[tuple[tuple[str | int, ...], str, Any]]:
    for start in environments:
        seen, name = [start], environments[start].after
        while name in environments:
            if name == start:
                loop = " -> ".join([*seen, start])
                return [(("environments", start, "after"), f"after makes a loop: {loop}", None)]
            if name in seen:
                break
            seen.append(name)
            name = environments[name].after
    return []
