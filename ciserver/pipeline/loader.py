"""Reading pipelines.yml: text to YAML nodes (which know their lines), nodes to plain data, data to a
validated Pipeline; every refusal is one PipelineError naming the file, the line and the key.

The file comes from whoever can push, so it is treated as hostile: a size cap, a cap on nodes after
alias expansion (a "billion laughs" file is a few lines long), a depth cap, duplicate keys refused,
and only the safe YAML loader. Scalars follow YAML 1.2, as GitHub Actions does: only true/false are
booleans, so `on:` is the key "on" and `branches: [no]` is the branch "no"; numbers are plain
decimals, so `010` is ten and `1:30` is a string.
"""

from __future__ import annotations

import difflib
import re
from typing import Any

import yaml
from pydantic import ValidationError
from pydantic_core import ErrorDetails
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from ciserver.pipeline.environments import BlueGreen, Canary, DeployedService, Environment, Strategy
from ciserver.pipeline.fields import Loc
from ciserver.pipeline.models import (
    Artifacts,
    Cache,
    ImageBuild,
    Job,
    Pipeline,
    PushFilter,
    Resources,
    Retry,
    Rules,
    Service,
    Triggers,
)

MAX_BYTES = 256 * 1024
MAX_NODES = 100_000
MAX_DEPTH = 64

_TAG = "tag:yaml.org,2002:"
_MERGE = _TAG + "merge"
# The tags SafeLoader gives plain scalars by itself; anything else was written by hand (`!!binary`, `!x`).
_IMPLICIT = {_TAG + name for name in ("null", "bool", "int", "float", "timestamp", "merge", "value")}
_INT = re.compile(r"[-+]?[0-9]{1,30}")
_FLOAT = re.compile(r"[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?")


class PipelineError(Exception):
    """A pipelines.yml the server refuses; str() is 'pipelines.yml:12: jobs.unit.timeout: <message>'."""

    def __init__(self, file: str, line: int | None, key: str | None, message: str) -> None:
        self.file, self.line, self.key, self.message = file, line, key, message
        where = file if line is None else f"{file}:{line}"
        super().__init__(": ".join(part for part in (where, key, message) if part))

    def __reduce__(self) -> tuple[type[PipelineError], tuple[str, int | None, str | None, str]]:
        # It may cross process boundaries (RQ); the default would call __init__ with the one string.
        return (PipelineError, (self.file, self.line, self.key, self.message))


def load_pipeline(text: str | bytes, filename: str = "pipelines.yml") -> Pipeline:
    """The validated pipeline; anything wrong raises PipelineError, never another exception."""
    root = _compose(text, filename)
    data = _Builder(filename).value(root, (), 0)
    try:
        return Pipeline.model_validate(data)
    except ValidationError as exc:
        raise _explain(exc, root, filename) from None


def load_data(text: str | bytes, filename: str = "pipelines.yml") -> dict[str, Any]:
    """The file as plain data, read the way load_pipeline reads it (YAML 1.2 scalars), unvalidated:
    what a JSON Schema validator should see."""
    return _Builder(filename).value(_compose(text, filename), (), 0)


def _compose(text: str | bytes, filename: str) -> MappingNode:
    """The document's node tree; aliases stay shared references here, so this costs what the text does."""
    size = len(text) if isinstance(text, bytes) else len(text.encode("utf-8", "surrogatepass"))
    if size > MAX_BYTES:
        raise PipelineError(filename, 1, None, f"the file is {size:,} bytes, over the limit of 256 KiB")
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise PipelineError(filename, 1, None, f"the file is not UTF-8 (byte {exc.start})") from None
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else 1
        problem = ": ".join(part for part in (exc.context, exc.problem) if part)
        raise PipelineError(filename, line, None, f"invalid YAML: {problem}") from None
    except yaml.reader.ReaderError as exc:
        line = text.count("\n", 0, exc.position) + 1
        raise PipelineError(
            filename, line, None, f"invalid YAML: character U+{exc.character:04X} is not allowed"
        ) from None
    except yaml.YAMLError as exc:
        raise PipelineError(filename, 1, None, f"invalid YAML: {exc}") from None
    except RecursionError:
        raise PipelineError(filename, 1, None, "invalid YAML: nested too deeply") from None
    if root is None:
        raise PipelineError(filename, 1, None, "the file is empty")
    if not isinstance(root, MappingNode):
        raise PipelineError(
            filename, 1, None, "the top level must be a mapping of keys such as image and jobs"
        )
    return root


class _Builder:
    """Nodes to plain data, counting every node an alias expands to and refusing duplicate keys."""

    def __init__(self, filename: str) -> None:
        self.filename = filename
        self.nodes = 0

    def error(self, node: Node, path: Loc, message: str) -> PipelineError:
        return PipelineError(self.filename, node.start_mark.line + 1, _dotted(path) or None, message)

    def value(self, node: Node, path: Loc, depth: int) -> Any:
        self.nodes += 1
        if self.nodes > MAX_NODES:
            raise self.error(node, path, f"too many nodes after alias expansion (over {MAX_NODES:,})")
        if depth > MAX_DEPTH:
            message = f"nested over {MAX_DEPTH} levels deep (or an alias contains itself)"
            raise self.error(node, path[:3], message)
        if isinstance(node, ScalarNode):
            if node.tag == _TAG + "str":
                return node.value
            if node.tag in _IMPLICIT:
                return _plain_scalar(node.value)
        elif isinstance(node, SequenceNode) and node.tag == _TAG + "seq":
            return [self.value(item, (*path, i), depth + 1) for i, item in enumerate(node.value)]
        elif isinstance(node, MappingNode) and node.tag == _TAG + "map":
            return self.mapping(node, path, depth)
        raise self.error(node, path, f"unsupported YAML tag {node.tag!r}")

    def mapping(self, node: MappingNode, path: Loc, depth: int) -> dict[str, Any]:
        result: dict[str, Any] = {}
        lines: dict[str, int] = {}  # explicit keys, for naming the first of two
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE:
                # `<<: *defaults`: keys already present (or merged earlier) win, as YAML specifies.
                sources = value_node.value if isinstance(value_node, SequenceNode) else [value_node]
                for source in sources:
                    if not isinstance(source, MappingNode):
                        raise self.error(value_node, path, "'<<' merges a mapping or a list of mappings")
                    for key, value in self.value(source, path, depth + 1).items():
                        result.setdefault(key, value)
                continue
            if not isinstance(key_node, ScalarNode):
                raise self.error(key_node, path, "a key must be a plain string, not a list or mapping")
            key, line = key_node.value, key_node.start_mark.line + 1
            if key in lines:
                raise self.error(
                    key_node, (*path, key), f"duplicate key {key!r} (first on line {lines[key]})"
                )
            lines[key] = line
            result[key] = self.value(value_node, (*path, key), depth + 1)
        return result


def _plain_scalar(text: str) -> Any:
    """A plain scalar as YAML 1.2's core schema reads it (hex, octal and dates stay strings)."""
    if text in ("", "~", "null", "Null", "NULL"):
        return None
    if text in ("true", "True", "TRUE", "false", "False", "FALSE"):
        return text[0] in "tT"
    if _INT.fullmatch(text):
        return int(text)
    if _FLOAT.fullmatch(text):
        return float(text)
    return text


def _explain(exc: ValidationError, root: MappingNode, filename: str) -> PipelineError:
    """The earliest problem in the file. A missing key comes last: it is often a misspelt one
    (`scrpit`), which is reported as unknown where it stands."""
    errors = exc.errors(include_url=False)
    ranked = [(error["type"] == "missing", _error_at(error, root, filename)) for error in errors]
    return min(ranked, key=lambda pair: (pair[0], pair[1].line or 0))[1]


def _error_at(error: ErrorDetails, root: MappingNode, filename: str) -> PipelineError:
    loc = tuple(error["loc"])
    node, key_node, matched = root, None, 0
    for part in loc:
        child = _child(node, part)
        if child is None:
            break
        (key_node, node), matched = child, matched + 1
    # A missing key is named in full and shown where its mapping starts; anything else at its own key.
    key = loc if error["type"] == "missing" else loc[:matched]
    line = (key_node or node).start_mark.line + 1
    return PipelineError(filename, line, _dotted(key) or None, _message(error, loc))


def _child(node: Node, part: str | int) -> tuple[ScalarNode | None, Node] | None:
    """The key and value nodes under `node` at one step of a pydantic loc, looking into `<<` merges."""
    if isinstance(node, SequenceNode) and isinstance(part, int) and 0 <= part < len(node.value):
        return None, node.value[part]
    if not isinstance(node, MappingNode):
        return None
    merged: list[Node] = []
    for key_node, value_node in node.value:
        if key_node.tag == _MERGE:
            merged += value_node.value if isinstance(value_node, SequenceNode) else [value_node]
        elif key_node.value == part:
            return key_node, value_node
    return next((found for source in merged if (found := _child(source, part)) is not None), None)


_KIND = {type(None): "nothing", bool: "true/false", int: "a number", float: "a number", str: "a string"}
_KIND |= {list: "a list", dict: "a mapping"}


def _message(error: ErrorDetails, loc: Loc) -> str:
    """Pydantic's wording for the common cases, in the terms of a YAML file."""
    got = _KIND.get(type(error["input"]), "something else")
    match error["type"]:
        case "extra_forbidden":
            close = difflib.get_close_matches(str(loc[-1]), _keys_at(loc[:-1]), n=1)
            return "unknown key" + (f" (did you mean {close[0]!r}?)" if close else "")
        case "missing":
            return "required key is missing"
        case "string_type":
            return f"expected a string, got {got}"
        case "list_type":
            return f"expected a list, got {got}"
        case "dict_type" | "model_type" | "model_attributes_type":
            return f"expected a mapping, got {got}"
        case "too_short":
            return "must not be empty"
        case "bool_type":
            return f"expected true or false, got {got}"
        case "int_type":
            return f"expected a whole number, got {got}"
        case "float_type":
            return f"expected a number, got {got}"
        case "greater_than_equal":
            return f"must be at least {error.get('ctx', {}).get('ge')}, not {error['input']!r}"
        case "less_than_equal":
            return f"must be at most {error.get('ctx', {}).get('le')}, not {error['input']!r}"
        case "literal_error":
            return f"must be {error.get('ctx', {}).get('expected')}, not {error['input']!r}"
    return error["msg"]


def _keys_at(path: Loc) -> list[str]:
    """The keys the mapping at `path` may hold, for a did-you-mean hint."""
    if path[:1] == ("jobs",) and len(path) >= 2:
        model: Any = Job
        for part in path[2:]:
            if isinstance(part, int):
                continue  # an item of a list of mappings (services)
            field = _field(model, part)
            model = _SUBMODELS.get(field) if field else None
            if model is None:
                return []
        return [info.alias or key for key, info in model.model_fields.items()]
    if path[:1] == ("environments",) and len(path) >= 2:
        model = Environment
        for part in path[2:]:
            model = {"strategy": Strategy, "canary": Canary, "blue_green": BlueGreen}.get(str(part))
            if model is None:
                return []
        return list(model.model_fields)
    top = {(): Pipeline, ("on",): Triggers, ("on", "push"): PushFilter, ("service",): DeployedService}.get(
        path
    )
    return list(top.model_fields) if top else []


_SUBMODELS: dict[str, Any] = {
    "only": Rules,
    "except_": Rules,
    "artifacts": Artifacts,
    "cache": Cache,
    "image_build": ImageBuild,
    "resources": Resources,
    "retry": Retry,
    "services": Service,
}


def _field(model: Any, part: str) -> str | None:
    """The field of `model` a loc part names, by name or by alias."""
    for key, info in model.model_fields.items():
        if part in (key, info.alias):
            return key
    return None


def _dotted(path: Loc) -> str:
    """jobs.unit.script[2]; a key that cannot be printed as it is shows as its repr."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + (part if part.isprintable() else repr(part))
    return out
