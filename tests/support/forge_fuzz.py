"""Hypothesis strategies shared by the forge tests: arbitrary JSON, and real-shaped payloads with
a few fields deleted or replaced, to fuzz the parsers near the shapes forges send."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

from hypothesis import strategies as st


def json_values(interesting: list[str]) -> st.SearchStrategy[Any]:
    scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text()
    return st.recursive(
        scalars | st.sampled_from(interesting),
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
        max_leaves=20,
    )


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix]
    if isinstance(value, dict):
        for key, item in value.items():
            found += _paths(item, (*prefix, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found += _paths(item, (*prefix, index))
    return found


def mutated_fixtures(fixtures: Path, values: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    payloads = [json.loads(path.read_text()) for path in sorted(fixtures.glob("*.json"))]

    @st.composite
    def mutated(draw: st.DrawFn) -> Any:
        payload = copy.deepcopy(draw(st.sampled_from(payloads)))
        for _ in range(draw(st.integers(1, 3))):
            paths = _paths(payload)[1:]
            if not paths:
                break
            path = draw(st.sampled_from(paths))
            parent = payload
            for key in path[:-1]:
                parent = parent[key]
            if draw(st.booleans()):
                del parent[path[-1]]
            else:
                parent[path[-1]] = draw(values)
        return payload

    return mutated()
