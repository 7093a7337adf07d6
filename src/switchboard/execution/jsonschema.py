"""A small JSON Schema validator for the subset LLM structured outputs use.

Covers what OpenAI ``response_format: json_schema`` and tool ``parameters`` schemas contain: ``type``,
object, array, number and string keywords, ``enum``/``const``, ``anyOf``/``oneOf``/``allOf``/``not``,
local ``$ref`` (``#/$defs/…``, ``#/definitions/…``, any JSON pointer into the root) and OpenAPI's
``nullable``. Other keywords (``format``, ``description``, ``if``, ``contains`` …) are ignored, and so are
malformed schema parts: the validator judges model output on the hot path and never raises.

Every subschema applied counts one level of nesting; past :data:`MAX_DEPTH` the answer is
"schema nesting too deep" — this bounds ``$ref`` cycles and the recursion of deep instances. A ``$ref``
target is checked once per instance value, so definitions that branch into shared definitions cost
linear time, not exponential. Patterns use Python's ``re.search``; one that does not compile is ignored.

Usage::

    validate({"name": 3}, {"type": "object", "properties": {"name": {"type": "string"}}})
    # -> '$.name: expected string, got integer'
"""

from __future__ import annotations

import functools
import json
import math
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from fractions import Fraction
from typing import Any
from urllib.parse import unquote

__all__ = ["MAX_DEPTH", "type_name", "validate"]

#: How many subschemas may be nested in one validation (``$ref`` hops included).
MAX_DEPTH = 64

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")

_TYPE_TESTS: dict[str, Callable[[Any], bool]] = {
    "null": lambda v: v is None,
    "boolean": lambda v: isinstance(v, bool),
    "integer": lambda v: (isinstance(v, int) and not isinstance(v, bool)) or (isinstance(v, float) and v.is_integer()),
    "number": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
    "string": lambda v: isinstance(v, str),
    "array": lambda v: isinstance(v, list | tuple),
    "object": lambda v: isinstance(v, Mapping),
}


def validate(instance: Any, schema: Mapping[str, Any] | bool) -> str | None:
    """``None`` if ``instance`` matches ``schema``; else the first problem, naming its JSON path.

    Usage::

        validate([1, "a"], {"type": "array", "items": {"type": "integer"}})  # '$[1]: expected integer, got string'
    """
    try:
        problem = _Checker(schema).check(instance, schema, 0)
    except RecursionError:
        return "$: nesting too deep"
    except Exception as exc:  # a last resort for exotic non-JSON instances (e.g. an __eq__ that raises)
        return f"$: cannot validate: {type(exc).__name__}"
    return None if problem is None else problem.render()


@dataclass(slots=True)
class _Problem:
    """Why an instance fails. ``path`` is collected while unwinding, so it is innermost first.

    ``expected`` is set for a type mismatch (so ``anyOf`` can merge them); ``fatal`` problems (nesting
    too deep) are not absorbed by ``anyOf``/``oneOf``/``not``.
    """

    message: str
    path: list[object] = field(default_factory=list)
    expected: tuple[str, ...] = ()
    fatal: bool = False

    def at(self, segment: object) -> _Problem:
        self.path.append(segment)
        return self

    def render(self) -> str:
        return _render_path(reversed(self.path)) + ": " + self.message


def _render_path(segments: Iterable[object]) -> str:
    out = ["$"]
    for seg in segments:
        if isinstance(seg, int):
            out.append(f"[{seg}]")
        elif isinstance(seg, str) and _IDENTIFIER.fullmatch(seg):
            out.append("." + seg)
        else:
            out.append(f"[{_short(seg)}]")
    return "".join(out)


class _Checker:
    """One validation: holds the root schema (for ``$ref``)."""

    __slots__ = ("refs", "root")

    def __init__(self, root: object) -> None:
        self.root = root
        # (id(target), id(instance)) -> outcome: each $ref target is checked once per instance node, so
        # schemas whose $defs branch into shared definitions stay linear instead of exponential.
        self.refs: dict[tuple[int, int], _Problem | None] = {}

    def check(self, inst: Any, schema: object, depth: int) -> _Problem | None:
        if schema is True:
            return None
        if schema is False:
            return _Problem("no value is allowed here")
        if not isinstance(schema, Mapping):
            return None  # malformed: ignored
        if depth > MAX_DEPTH:
            return _Problem("schema nesting too deep", fatal=True)
        if inst is None and schema.get("nullable") is True:
            return None
        ref = schema.get("$ref")
        if ref is not None:
            target = self._resolve(ref)
            if target is not None and (problem := self._check_ref(inst, target, depth)):
                return problem
        if (kind := schema.get("type")) is not None and (problem := _check_type(inst, kind)):
            return problem
        problem = _check_values(inst, schema)
        if problem is not None:
            return problem
        if isinstance(inst, Mapping):
            problem = self._check_object(inst, schema, depth)
        elif isinstance(inst, list | tuple):
            problem = self._check_array(inst, schema, depth)
        elif isinstance(inst, str):
            problem = _check_string(inst, schema)
        elif isinstance(inst, int | float) and not isinstance(inst, bool):
            problem = _check_number(inst, schema)
        return problem or self._check_combinators(inst, schema, depth)

    def _check_ref(self, inst: Any, target: object, depth: int) -> _Problem | None:
        key = (id(target), id(inst))
        if key in self.refs:
            seen = self.refs[key]
            return None if seen is None else replace(seen, path=list(seen.path))
        problem = self.check(inst, target, depth + 1)
        if problem is None:
            self.refs[key] = None
        elif not problem.fatal:  # a fatal problem ends the validation anyway
            self.refs[key] = replace(problem, path=list(problem.path))
        return problem

    def _resolve(self, ref: object) -> object | None:
        """The subschema a local ``$ref`` points at, or ``None`` (remote or dangling refs are ignored)."""
        if not isinstance(ref, str) or not ref.startswith("#"):
            return None
        pointer = unquote(ref[1:])
        if not pointer:
            return self.root
        if not pointer.startswith("/"):
            return None
        node: object = self.root
        for raw in pointer[1:].split("/"):
            token = raw.replace("~1", "/").replace("~0", "~")
            if isinstance(node, Mapping):
                if token not in node:
                    return None
                node = node[token]
            elif isinstance(node, list) and token.isascii() and token.isdecimal() and int(token) < len(node):
                node = node[int(token)]
            else:
                return None
        return node

    def _check_object(self, inst: Mapping[Any, Any], schema: Mapping[str, Any], depth: int) -> _Problem | None:
        required = schema.get("required")
        if isinstance(required, list):
            for name in required:
                if isinstance(name, str) and name not in inst:
                    return _Problem(f"missing required property {_short(name)}")
        low, high = _count(schema.get("minProperties")), _count(schema.get("maxProperties"))
        if low is not None and len(inst) < low:
            return _Problem(f"expected at least {low} properties, got {len(inst)}")
        if high is not None and len(inst) > high:
            return _Problem(f"expected at most {high} properties, got {len(inst)}")
        props = schema.get("properties")
        props = props if isinstance(props, Mapping) else None
        patterns = _patterns(schema.get("patternProperties"))
        extra = schema.get("additionalProperties")
        extra = extra if extra is False or isinstance(extra, Mapping) else None
        if props is None and not patterns and extra is None:
            return None
        for key, value in inst.items():
            matched = False
            if props is not None and key in props:
                matched = True
                if problem := self.check(value, props[key], depth + 1):
                    return problem.at(key)
            if patterns and isinstance(key, str):
                for regex, sub in patterns:
                    if regex.search(key):
                        matched = True
                        if problem := self.check(value, sub, depth + 1):
                            return problem.at(key)
            if not matched and extra is not None:
                if extra is False:
                    return _Problem("additional property not allowed").at(key)
                if problem := self.check(value, extra, depth + 1):
                    return problem.at(key)
        return None

    def _check_array(self, inst: list[Any] | tuple[Any, ...], schema: Mapping[str, Any],
                     depth: int) -> _Problem | None:
        low, high = _count(schema.get("minItems")), _count(schema.get("maxItems"))
        if low is not None and len(inst) < low:
            return _Problem(f"expected at least {low} items, got {len(inst)}")
        if high is not None and len(inst) > high:
            return _Problem(f"expected at most {high} items, got {len(inst)}")
        prefix, rest = schema.get("prefixItems"), schema.get("items")
        if isinstance(rest, list):  # the pre-2020 tuple form of "items"
            prefix, rest = (prefix if isinstance(prefix, list) else rest), None
        start = 0
        if isinstance(prefix, list):
            for i, (item, sub) in enumerate(zip(inst, prefix, strict=False)):
                if problem := self.check(item, sub, depth + 1):
                    return problem.at(i)
            start = len(prefix)
        if rest is not None and rest is not True:
            for i in range(start, len(inst)):
                if problem := self.check(inst[i], rest, depth + 1):
                    return problem.at(i)
        if schema.get("uniqueItems") is True:
            seen: dict[object, int] = {}
            for i, item in enumerate(inst):
                j = seen.setdefault(_key(item), i)
                if j != i:
                    return _Problem(f"items {j} and {i} are equal; expected unique items")
        return None

    def _check_combinators(self, inst: Any, schema: Mapping[str, Any], depth: int) -> _Problem | None:
        for sub in _branches(schema.get("allOf")):
            if problem := self.check(inst, sub, depth + 1):
                return problem
        any_of = _branches(schema.get("anyOf"))
        if any_of:
            misses: list[_Problem] = []
            for sub in any_of:
                problem = self.check(inst, sub, depth + 1)
                if problem is None:
                    break
                if problem.fatal:
                    return problem
                misses.append(problem)
            else:
                return _no_branch("anyOf", inst, misses)
        one_of = _branches(schema.get("oneOf"))
        if one_of and (problem := self._check_one_of(inst, one_of, depth)):
            return problem
        negated = schema.get("not")
        if isinstance(negated, Mapping | bool):
            problem = self.check(inst, negated, depth + 1)
            if problem is None:
                return _Problem('matches the "not" schema')
            if problem.fatal:
                return problem
        return None

    def _check_one_of(self, inst: Any, branches: list[object], depth: int) -> _Problem | None:
        misses: list[_Problem] = []
        matched: list[int] = []
        for i, sub in enumerate(branches):
            problem = self.check(inst, sub, depth + 1)
            if problem is None:
                matched.append(i)
                if len(matched) > 1:
                    return _Problem(f"matches oneOf branches {matched[0]} and {i}; expected exactly one")
            elif problem.fatal:
                return problem
            else:
                misses.append(problem)
        return None if matched else _no_branch("oneOf", inst, misses)


def _branches(value: object) -> list[object]:
    """The subschemas of ``anyOf``/``oneOf``/``allOf``; malformed entries are dropped, not counted as matches."""
    if not isinstance(value, list):
        return []
    return [sub for sub in value if isinstance(sub, Mapping | bool)]


def _no_branch(keyword: str, inst: Any, misses: list[_Problem]) -> _Problem:
    """The problem when no ``anyOf``/``oneOf`` branch matched.

    All type mismatches merge into one ("expected string or null, got integer"); otherwise the branch
    that got deepest into the instance is the likely intended one, and its problem is reported.
    """
    if all(m.expected and not m.path for m in misses):
        names = tuple(dict.fromkeys(n for m in misses for n in m.expected))
        return _type_problem(names, inst)
    deepest = max(misses, key=lambda m: len(m.path))
    if deepest.path:
        return deepest
    return _Problem(f"matches no {keyword} branch: " + "; ".join(m.message for m in misses[:3]))


def _check_type(inst: Any, kind: object) -> _Problem | None:
    names = (kind,) if isinstance(kind, str) else tuple(kind) if isinstance(kind, list) else ()
    known = tuple(n for n in names if isinstance(n, str) and n in _TYPE_TESTS)
    if not known or any(_TYPE_TESTS[n](inst) for n in known):
        return None
    return _type_problem(known, inst)


def _type_problem(expected: tuple[str, ...], inst: Any) -> _Problem:
    return _Problem(f"expected {' or '.join(expected)}, got {type_name(inst)}", expected=expected)


def type_name(inst: Any) -> str:
    """The JSON Schema type of a decoded JSON value (``integer`` for whole ints, ``number`` for floats)."""
    if inst is None:
        return "null"
    if isinstance(inst, bool):
        return "boolean"
    if isinstance(inst, int):
        return "integer"
    if isinstance(inst, float):
        return "number"
    if isinstance(inst, str):
        return "string"
    if isinstance(inst, list | tuple):
        return "array"
    if isinstance(inst, Mapping):
        return "object"
    return type(inst).__name__


def _check_values(inst: Any, schema: Mapping[str, Any]) -> _Problem | None:
    enum = schema.get("enum")
    if isinstance(enum, list):
        key = _key(inst)
        if not any(_key(option) == key for option in enum):
            return _Problem(f"expected one of {_short(enum)}, got {_short(inst)}")
    if "const" in schema and _key(inst) != _key(schema["const"]):
        return _Problem(f"expected {_short(schema['const'])}, got {_short(inst)}")
    return None


def _check_number(inst: int | float, schema: Mapping[str, Any]) -> _Problem | None:
    low, high = _number(schema.get("minimum")), _number(schema.get("maximum"))
    xlow, xhigh = schema.get("exclusiveMinimum"), schema.get("exclusiveMaximum")
    if xlow is True and low is not None:  # draft 4: a flag on "minimum"
        xlow, low = low, None
    if xhigh is True and high is not None:
        xhigh, high = high, None
    xlow, xhigh = _number(xlow), _number(xhigh)
    if low is not None and inst < low:
        return _Problem(f"expected at least {_short(low)}, got {_short(inst)}")
    if xlow is not None and inst <= xlow:
        return _Problem(f"expected more than {_short(xlow)}, got {_short(inst)}")
    if high is not None and inst > high:
        return _Problem(f"expected at most {_short(high)}, got {_short(inst)}")
    if xhigh is not None and inst >= xhigh:
        return _Problem(f"expected less than {_short(xhigh)}, got {_short(inst)}")
    step = _number(schema.get("multipleOf"))
    if step is not None and 0 < step < math.inf and not _is_multiple(inst, step):
        return _Problem(f"expected a multiple of {_short(step)}, got {_short(inst)}")
    return None


def _is_multiple(value: int | float, step: int | float) -> bool:
    if isinstance(value, int) and isinstance(step, int):
        return value % step == 0
    if isinstance(value, float) and not math.isfinite(value):
        return False
    # Exact decimal arithmetic on the shortest repr, so that 0.3 is a multiple of 0.1.
    quotient = _fraction(value) / _fraction(step)
    return quotient.denominator == 1


def _fraction(value: int | float) -> Fraction:
    return Fraction(value) if isinstance(value, int) else Fraction(repr(value))


def _check_string(inst: str, schema: Mapping[str, Any]) -> _Problem | None:
    low, high = _count(schema.get("minLength")), _count(schema.get("maxLength"))
    if low is not None and len(inst) < low:
        return _Problem(f"expected at least {low} characters, got {len(inst)}")
    if high is not None and len(inst) > high:
        return _Problem(f"expected at most {high} characters, got {len(inst)}")
    pattern = schema.get("pattern")
    if isinstance(pattern, str) and (regex := _compile(pattern)) is not None and not regex.search(inst):
        return _Problem(f"does not match pattern {_short(pattern)}")
    return None


@functools.lru_cache(maxsize=256)
def _compile(pattern: str) -> re.Pattern[str] | None:
    """The compiled pattern, or ``None`` for one Python cannot compile (the keyword is then ignored)."""
    try:
        return re.compile(pattern)
    except (re.error, RecursionError, OverflowError, ValueError):
        return None


def _patterns(value: object) -> list[tuple[re.Pattern[str], object]]:
    if not isinstance(value, Mapping):
        return []
    out = []
    for pattern, sub in value.items():
        if isinstance(pattern, str) and (regex := _compile(pattern)) is not None:
            out.append((regex, sub))
    return out


def _count(value: object) -> int | None:
    """A non-negative count from a schema (``3`` or ``3.0``), or ``None`` if malformed."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if value >= 0 else None
    if isinstance(value, float) and value.is_integer() and value >= 0:
        return int(value)
    return None


def _number(value: object) -> int | float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int) or (isinstance(value, float) and not math.isnan(value)):
        return value
    return None


def _key(value: Any) -> object:
    """A hashable key equal for JSON-equal values: ``1 == 1.0`` but ``1 != true``, objects unordered."""
    if value is None:
        return ("null",)
    if isinstance(value, bool):
        return ("bool", value)
    if isinstance(value, int | float):
        return ("num", value)
    if isinstance(value, str):
        return ("str", value)
    if isinstance(value, list | tuple):
        return ("arr", tuple(_key(v) for v in value))
    if isinstance(value, Mapping):
        return ("obj", frozenset((_key(k), _key(v)) for k, v in value.items()))
    return ("other", id(value))


def _short(value: object, limit: int = 60) -> str:
    """``value`` as compact JSON for a message, cut at ``limit`` characters."""
    try:
        text = json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=repr)
    except (TypeError, ValueError, RecursionError):
        try:
            text = repr(value)
        except Exception:  # e.g. an int too long to print
            text = f"<{type(value).__name__}>"
    return text if len(text) <= limit else text[: limit - 1] + "…"
