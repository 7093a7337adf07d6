"""Hypothesis strategies for the bad-input guarantee: random JSON, and valid requests with mutations."""

from __future__ import annotations

import copy
from typing import Any

from hypothesis import strategies as st

scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=12)
    | st.sampled_from(["", "user", "assistant", "tool", "text", "function", "image_url", "tool_use", "auto"])
)
json_values: st.SearchStrategy[Any] = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
_odd = st.sampled_from([None, True, False, "", "x", 2**63, 2**63 - 1, -1, 0, float("nan"), float("inf"), [], {}])


def mostly(valid: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Valid values nine times in ten, odd ones (wrong types, edges of ranges, NaN) otherwise."""
    return st.integers(0, 9).flatmap(lambda k: _odd if k == 9 else valid)


_keys = st.sampled_from(["type", "role", "content", "name", "id", "text", "input", "foo"]) | st.text(
    max_size=6
)

Path = tuple[Any, ...]


def _paths(node: Any, prefix: Path = ()) -> list[Path]:
    out = [prefix]
    if isinstance(node, dict):
        for key, value in node.items():
            out += _paths(value, (*prefix, key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            out += _paths(value, (*prefix, i))
    return out


def _parent(doc: Any, path: Path) -> Any:
    for step in path[:-1]:
        doc = doc[step]
    return doc


@st.composite
def mutated(draw: st.DrawFn, base: Any) -> Any:
    """``base`` with one to three random edits: a value replaced, a key or item removed, one added."""
    doc = copy.deepcopy(base)
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(_paths(doc)))
        op = draw(st.sampled_from(["replace", "delete", "insert"]))
        if not path:
            if op == "replace":
                doc = draw(json_values)
            continue
        parent = _parent(doc, path)
        if op == "replace":
            parent[path[-1]] = draw(json_values)
        elif op == "delete":
            del parent[path[-1]]
        elif isinstance(parent, dict):
            parent[draw(_keys)] = draw(json_values)
        else:
            parent.insert(path[-1], draw(json_values))
    return doc
