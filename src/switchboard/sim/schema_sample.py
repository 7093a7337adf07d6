"""Sample values that conform to a JSON schema: tool-call arguments and structured (JSON) replies.

Handles the subset LLM APIs use: ``type`` (also a list, or Gemini's upper-case names), ``properties`` /
``required``, ``items`` / ``prefixItems`` / ``minItems`` / ``maxItems``, ``enum``, ``const``,
``anyOf`` / ``oneOf`` (first non-null branch), ``allOf`` (merged), local ``$ref`` (``#/$defs/...``),
string ``format`` / ``minLength`` / ``maxLength`` and numeric bounds.

Usage::

    sample_for_schema({"type": "object", "properties": {"city": {"type": "string"}},
                       "required": ["city"]}, seed=7)           # {"city": "quiet river"}
"""

from __future__ import annotations

import math
from typing import Any

from switchboard.sim.words import sample_words

__all__ = ["sample_for_schema"]

_MAX_DEPTH = 10

_STRING_FORMATS = {
    "date-time": "2025-01-15T09:30:00Z",
    "date": "2025-01-15",
    "time": "09:30:00",
    "email": "someone@example.com",
    "uri": "https://example.com/",
    "url": "https://example.com/",
    "uuid": "123e4567-e89b-42d3-a456-426614174000",
    "hostname": "example.com",
    "ipv4": "192.0.2.1",
    "ipv6": "2001:db8::1",
    "duration": "PT1H",
}


def sample_for_schema(schema: Any, seed: int, *, fill_optional: bool = False) -> Any:
    """A value valid against ``schema``; ``fill_optional`` also fills properties that are not required."""
    return _Sampler(schema, seed, fill_optional).value(schema, 0)


class _Sampler:
    __slots__ = ("counter", "fill_optional", "root", "seed")

    def __init__(self, root: Any, seed: int, fill_optional: bool) -> None:
        self.root = root
        self.seed = seed
        self.fill_optional = fill_optional
        self.counter = 0

    def _words(self, n: int) -> str:
        self.counter += 1
        return sample_words(self.seed + self.counter * 131, n)

    def _resolve(self, schema: dict[str, Any]) -> Any:
        ref = schema.get("$ref")
        if not isinstance(ref, str) or not ref.startswith("#"):
            return schema
        node: Any = self.root
        for part in ref[1:].split("/"):
            if not part:
                continue
            part = part.replace("~1", "/").replace("~0", "~")
            if isinstance(node, dict) and part in node:
                node = node[part]
            else:
                return {}
        return node

    def value(self, schema: Any, depth: int) -> Any:
        if not isinstance(schema, dict):
            return self._words(2) if schema is not False else None
        schema = self._resolve(schema)
        if not isinstance(schema, dict):
            return self._words(2)
        if "const" in schema:
            return schema["const"]
        enum = schema.get("enum")
        if isinstance(enum, list) and enum:
            return enum[0]
        for key in ("anyOf", "oneOf"):
            branches = schema.get(key)
            if isinstance(branches, list) and branches:
                return self.value(_first_non_null(branches), depth + 1)
        all_of = schema.get("allOf")
        if isinstance(all_of, list) and all_of:
            merged = _merge([self._resolve(s) if isinstance(s, dict) else {} for s in all_of])
            rest = {k: v for k, v in schema.items() if k != "allOf"}
            return self.value(_merge([merged, rest]), depth + 1)
        kind = _type_of(schema)
        if depth > _MAX_DEPTH:  # recursive schemas: stop with the smallest value of the type
            if kind == "object":
                return {}
            return [] if kind == "array" else self._scalar(kind, {})
        if kind == "object":
            return self._object(schema, depth)
        if kind == "array":
            return self._array(schema, depth)
        return self._scalar(kind, schema)

    def _object(self, schema: dict[str, Any], depth: int) -> dict[str, Any]:
        props = schema.get("properties")
        props = props if isinstance(props, dict) else {}
        required = schema.get("required")
        names: list[str] = [r for r in required if isinstance(r, str)] if isinstance(required, list) else []
        if self.fill_optional:
            names += [p for p in props if p not in names]
        return {name: self.value(props.get(name, {"type": "string"}), depth + 1) for name in names}

    def _array(self, schema: dict[str, Any], depth: int) -> list[Any]:
        prefix = schema.get("prefixItems")
        out = [self.value(s, depth + 1) for s in prefix] if isinstance(prefix, list) else []
        hi = _int(schema.get("maxItems"), -1)  # -1: unbounded
        # one item at least, except deep down, so that recursive schemas end
        want = max(_int(schema.get("minItems"), 0), 1 if depth < 4 else 0)
        if hi >= 0:
            want = min(want, hi)
        items = schema.get("items")
        while len(out) < want:
            out.append(self.value(items if isinstance(items, dict) else {}, depth + 1))
        return out[:hi] if hi >= 0 else out

    def _scalar(self, kind: str, schema: dict[str, Any]) -> Any:
        if kind == "integer":
            return _integer(schema)
        if kind == "number":
            return _number(schema)
        if kind == "boolean":
            return True
        if kind == "null":
            return None
        fmt = schema.get("format")
        if isinstance(fmt, str) and fmt in _STRING_FORMATS:
            return _STRING_FORMATS[fmt]
        text = self._words(2)
        lo = _int(schema.get("minLength"), 0)
        hi = _int(schema.get("maxLength"), -1)
        while len(text) < lo:
            text += " " + self._words(2)
        if hi >= 0:
            text = text[:hi]
        return text


def _first_non_null(branches: list[Any]) -> Any:
    for b in branches:
        if not (isinstance(b, dict) and b.get("type") in ("null", "NULL")):
            return b
    return branches[0]


def _merge(schemas: list[Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for s in schemas:
        if not isinstance(s, dict):
            continue
        for k, v in s.items():
            if k == "properties" and isinstance(v, dict):
                out["properties"] = {**out.get("properties", {}), **v}
            elif k == "required" and isinstance(v, list):
                out["required"] = [
                    *out.get("required", []),
                    *(r for r in v if r not in out.get("required", [])),
                ]
            else:
                out[k] = v
    return out


def _type_of(schema: dict[str, Any]) -> str:
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if isinstance(k, str) and k.lower() != "null"), "null")
    if isinstance(kind, str):
        return kind.lower()
    if "properties" in schema or "required" in schema:
        return "object"
    if "items" in schema or "prefixItems" in schema:
        return "array"
    return "string"


def _int(value: Any, default: int) -> int:
    if isinstance(value, bool):
        return default
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.isdigit():  # Gemini's OpenAPI schemas write int64 as strings
        return int(value)
    return default


def _bounds(schema: dict[str, Any]) -> tuple[float | None, float | None, bool, bool]:
    lo = schema.get("minimum")
    hi = schema.get("maximum")
    ex_lo = schema.get("exclusiveMinimum")
    ex_hi = schema.get("exclusiveMaximum")
    lo_excl = hi_excl = False
    if isinstance(ex_lo, int | float) and not isinstance(ex_lo, bool):
        lo, lo_excl = ex_lo, True
    if isinstance(ex_hi, int | float) and not isinstance(ex_hi, bool):
        hi, hi_excl = ex_hi, True
    lo_f = float(lo) if isinstance(lo, int | float) and not isinstance(lo, bool) else None
    hi_f = float(hi) if isinstance(hi, int | float) and not isinstance(hi, bool) else None
    return lo_f, hi_f, lo_excl, hi_excl


def _integer(schema: dict[str, Any]) -> int:
    lo, hi, lo_excl, hi_excl = _bounds(schema)
    low = None if lo is None else (math.floor(lo) + 1 if lo_excl else math.ceil(lo))
    high = None if hi is None else (math.ceil(hi) - 1 if hi_excl else math.floor(hi))
    value = 1
    if low is not None and value < low:
        value = low
    if high is not None and value > high:
        value = high
    step = schema.get("multipleOf")
    if isinstance(step, int) and not isinstance(step, bool) and step > 0 and value % step:
        value = (value // step + 1) * step
        if high is not None and value > high:
            value -= step
    return value


def _number(schema: dict[str, Any]) -> float | int:
    lo, hi, lo_excl, hi_excl = _bounds(schema)
    step = schema.get("multipleOf")
    if lo is not None and hi is not None:
        value = (lo + hi) / 2
    elif lo is not None:
        value = lo + 1 if lo_excl else lo
    elif hi is not None:
        value = hi - 1 if hi_excl else hi
    else:
        value = 1.5
    if isinstance(step, int | float) and not isinstance(step, bool) and step > 0:
        value = math.ceil(value / step) * step
        if hi is not None and (value > hi or (hi_excl and value >= hi)):
            value -= step
    return value
