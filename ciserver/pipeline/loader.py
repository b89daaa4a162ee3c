"""Reading pipelines.yml: YAML to nodes (with lines), nodes to models, errors as file:line: key.

Hostile files are refused before they cost anything: a size cap, a cap on nodes after alias
expansion (a "billion laughs" file is a few lines long), duplicate keys, and YAML 1.1 booleans
turned off, so `on:` is the key "on" and `branches: [no]` is the branch "no".
"""

from __future__ import annotations

import re
from typing import Any

import yaml
from pydantic import ValidationError

from ciserver.pipeline.models import JobError, Pipeline

MAX_BYTES = 256 * 1024
MAX_NODES = 100_000


class PipelineError(Exception):
    """A pipeline file the server refuses; str() is `file:line: key: message`."""

    def __init__(self, file: str, line: int | None, key: str | None, message: str) -> None:
        self.file, self.line, self.key, self.message = file, line, key, message
        where = f"{file}:{line}" if line else file
        super().__init__(f"{where}: {key}: {message}" if key else f"{where}: {message}")


class _Loader(yaml.SafeLoader):
    """SafeLoader with only true/false as booleans (YAML 1.2), so `on`, `yes`, `no` stay strings."""


_Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)


def load_pipeline(text: str | bytes, filename: str = "pipelines.yml") -> Pipeline:
    """The validated pipeline, or PipelineError naming the line and key; never another exception."""
    try:
        return _load(text, filename)
    except PipelineError:
        raise
    except RecursionError:
        raise PipelineError(filename, None, None, "nested too deeply") from None
    except Exception as exc:  # a loader that raises anything else would be a 500 or a stuck build
        raise PipelineError(filename, None, None, f"could not be read: {exc}") from None


def _load(text: str | bytes, filename: str) -> Pipeline:
    raw = text.encode() if isinstance(text, str) else text
    if len(raw) > MAX_BYTES:
        raise PipelineError(filename, None, None, f"is {len(raw)} bytes; the limit is {MAX_BYTES}")
    try:
        source = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise PipelineError(filename, 1, None, "is not UTF-8 text") from None
    try:
        root = yaml.compose(source, Loader=_Loader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        raise PipelineError(
            filename, mark.line + 1 if mark else None, None, f"invalid YAML: {exc.problem or exc.context}"
        ) from None
    except yaml.YAMLError as exc:
        raise PipelineError(filename, None, None, f"invalid YAML: {exc}") from None
    if root is None or not isinstance(root, yaml.MappingNode):
        raise PipelineError(filename, 1, None, "must be a mapping of keys such as image, stages and jobs")
    _check_nodes(root, filename)
    data = _Loader(source).construct_document(root)
    try:
        return Pipeline.model_validate(data)
    except ValidationError as exc:
        raise _first_error(exc, root, filename) from None


def _check_nodes(root: yaml.Node, filename: str) -> None:
    """Refuse duplicate keys, and count nodes as if every alias were expanded, without expanding."""
    sizes: dict[int, int] = {}

    def size(node: yaml.Node, depth: int) -> int:
        if id(node) in sizes:
            return sizes[id(node)]
        if depth > 200:
            raise PipelineError(filename, node.start_mark.line + 1, None, "nested too deeply")
        total = 1
        if isinstance(node, yaml.MappingNode):
            seen: dict[object, int] = {}
            for key, value in node.value:
                if isinstance(key, yaml.ScalarNode) and key.value != "<<":
                    if key.value in seen:
                        raise PipelineError(filename, key.start_mark.line + 1, key.value, "duplicate key")
                    seen[key.value] = key.start_mark.line
                total += size(key, depth + 1) + size(value, depth + 1)
        elif isinstance(node, yaml.SequenceNode):
            total += sum(size(item, depth + 1) for item in node.value)
        sizes[id(node)] = total
        if total > MAX_NODES:
            raise PipelineError(
                filename, node.start_mark.line + 1, None, "too many nodes after alias expansion"
            )
        return total

    size(root, 0)


def _first_error(exc: ValidationError, root: yaml.MappingNode, filename: str) -> PipelineError:
    # An unknown key usually explains the rest (a misspelt `scrpit` is also a missing `script`).
    error = sorted(exc.errors(), key=lambda e: e["type"] != "extra_forbidden")[0]
    loc: tuple[Any, ...] = tuple(error["loc"])
    message = error["msg"].removeprefix("Value error, ")
    cause = error.get("ctx", {}).get("error")
    if isinstance(cause, JobError):
        loc, message = ("jobs", cause.job, cause.key), cause.message
    if error["type"] == "extra_forbidden":
        message = "unknown key"
    elif error["type"] == "missing":
        message = "is required"
    key_node, value_node = _find(root, loc)
    node = key_node if error["type"] in ("extra_forbidden", "missing") or value_node is None else value_node
    node = node or root
    return PipelineError(filename, node.start_mark.line + 1, ".".join(str(p) for p in loc) or None, message)


def _find(root: yaml.Node, loc: tuple[Any, ...]) -> tuple[yaml.Node | None, yaml.Node | None]:
    """The key node and value node at `loc`, as far down as the path can be followed."""
    key_node: yaml.Node | None = None
    node: yaml.Node | None = root
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            match = next(
                ((k, v) for k, v in node.value if isinstance(k, yaml.ScalarNode) and k.value == str(part)),
                None,
            )
            if match is None:
                return key_node or node, None
            key_node, node = match
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            key_node, node = node.value[part], node.value[part]
        else:
            return key_node or node, node
    return key_node, node
