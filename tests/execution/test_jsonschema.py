from __future__ import annotations

from typing import Any

import jsonschema as reference
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from switchboard.execution.jsonschema import MAX_DEPTH, validate

OBJ = {"type": "object", "properties": {"name": {"type": "string"}, "age": {"type": "integer"}}}


# --- type -----------------------------------------------------------------------------------------

@pytest.mark.parametrize(("kind", "good", "bad", "got"), [
    ("string", "x", 1, "integer"),
    ("integer", 3, 3.5, "number"),
    ("number", 3.5, "3.5", "string"),
    ("boolean", False, 0, "integer"),
    ("null", None, False, "boolean"),
    ("array", [1], {"a": 1}, "object"),
    ("object", {}, [], "array"),
])
def test_type(kind: str, good: object, bad: object, got: str) -> None:
    assert validate(good, {"type": kind}) is None
    assert validate(bad, {"type": kind}) == f"$: expected {kind}, got {got}"


def test_integer_accepts_integral_floats_and_rejects_bools() -> None:
    assert validate(3.0, {"type": "integer"}) is None
    assert validate(True, {"type": "integer"}) == "$: expected integer, got boolean"
    assert validate(False, {"type": "number"}) == "$: expected number, got boolean"
    assert validate(float("inf"), {"type": "integer"}) == "$: expected integer, got number"


def test_type_list() -> None:
    schema = {"type": ["string", "null"]}
    assert validate(None, schema) is None
    assert validate("a", schema) is None
    assert validate(1, schema) == "$: expected string or null, got integer"


def test_unknown_type_names_are_ignored() -> None:
    assert validate(1, {"type": "text"}) is None
    assert validate(1, {"type": ["text", "string"]}) == "$: expected string, got integer"


def test_path_names_the_failing_value() -> None:
    schema = {"type": "object", "properties": {"items": {"type": "array", "items": {
        "type": "object", "properties": {"name": {"type": "string"}}}}}}
    doc = {"items": [{"name": "a"}, {"name": "b"}, {"name": 7}]}
    assert validate(doc, schema) == "$.items[2].name: expected string, got integer"


def test_path_quotes_keys_that_are_not_identifiers() -> None:
    schema = {"properties": {"first name": {"type": "string"}, "2x": {"type": "string"}}}
    assert validate({"first name": 1}, schema) == '$["first name"]: expected string, got integer'
    assert validate({"2x": 1}, schema) == '$["2x"]: expected string, got integer'


# --- objects --------------------------------------------------------------------------------------

def test_properties() -> None:
    assert validate({"name": "a", "age": 3, "other": None}, OBJ) is None
    assert validate({"name": "a", "age": "3"}, OBJ) == "$.age: expected integer, got string"


def test_required() -> None:
    schema = {**OBJ, "required": ["name", "age"]}
    assert validate({"name": "a", "age": 1}, schema) is None
    assert validate({"name": "a"}, schema) == '$: missing required property "age"'


def test_additional_properties_false() -> None:
    schema = {**OBJ, "additionalProperties": False}
    assert validate({"name": "a"}, schema) is None
    assert validate({"name": "a", "extra": 1}, schema) == "$.extra: additional property not allowed"


def test_additional_properties_schema() -> None:
    schema = {**OBJ, "additionalProperties": {"type": "number"}}
    assert validate({"name": "a", "x": 1.5}, schema) is None
    assert validate({"name": "a", "x": "1.5"}, schema) == "$.x: expected number, got string"


def test_pattern_properties() -> None:
    schema = {"patternProperties": {"^x_": {"type": "integer"}}, "additionalProperties": False}
    assert validate({"x_a": 1, "x_b": 2}, schema) is None
    assert validate({"x_a": "1"}, schema) == "$.x_a: expected integer, got string"
    assert validate({"y": 1}, schema) == "$.y: additional property not allowed"


def test_min_max_properties() -> None:
    schema = {"minProperties": 1, "maxProperties": 2}
    assert validate({"a": 1}, schema) is None
    assert validate({}, schema) == "$: expected at least 1 properties, got 0"
    assert validate({"a": 1, "b": 2, "c": 3}, schema) == "$: expected at most 2 properties, got 3"


def test_object_keywords_skip_other_types() -> None:
    assert validate("not an object", {"required": ["a"], "properties": {"a": False}}) is None


# --- arrays ---------------------------------------------------------------------------------------

def test_items() -> None:
    schema = {"type": "array", "items": {"type": "integer"}}
    assert validate([1, 2, 3], schema) is None
    assert validate([1, "2"], schema) == "$[1]: expected integer, got string"


def test_prefix_items_then_items() -> None:
    schema = {"prefixItems": [{"type": "string"}, {"type": "integer"}], "items": {"type": "boolean"}}
    assert validate(["a", 1, True, False], schema) is None
    assert validate(["a", "b"], schema) == "$[1]: expected integer, got string"
    assert validate(["a", 1, None], schema) == "$[2]: expected boolean, got null"
    assert validate(["a", 1, 2], {**schema, "items": False}) == "$[2]: no value is allowed here"


def test_legacy_tuple_items() -> None:
    schema = {"items": [{"type": "string"}, {"type": "integer"}]}
    assert validate(["a", 1, "anything"], schema) is None
    assert validate([1], schema) == "$[0]: expected string, got integer"


def test_min_max_items() -> None:
    schema = {"minItems": 1, "maxItems": 2}
    assert validate([1], schema) is None
    assert validate([], schema) == "$: expected at least 1 items, got 0"
    assert validate([1, 2, 3], schema) == "$: expected at most 2 items, got 3"


def test_unique_items() -> None:
    schema = {"uniqueItems": True}
    assert validate([1, True, "1", [1], {"a": 1}, {"a": True}], schema) is None
    assert validate([1, 2, 1.0], schema) == "$: items 0 and 2 are equal; expected unique items"
    assert validate([{"a": 1, "b": 2}, {"b": 2, "a": 1}], schema) is not None
    assert validate([1, 1], {"uniqueItems": False}) is None


# --- values ---------------------------------------------------------------------------------------

def test_enum() -> None:
    schema = {"enum": ["red", "green", None]}
    assert validate("red", schema) is None
    assert validate(None, schema) is None
    assert validate("blue", schema) == '$: expected one of ["red","green",null], got "blue"'


def test_enum_and_const_tell_booleans_from_numbers() -> None:
    assert validate(True, {"enum": [1, 2]}) is not None
    assert validate(1.0, {"enum": [1, 2]}) is None
    assert validate(0, {"const": False}) == "$: expected false, got 0"
    assert validate({"a": [1]}, {"const": {"a": [1.0]}}) is None


def test_const() -> None:
    assert validate("circle", {"const": "circle"}) is None
    assert validate("square", {"const": "circle"}) == '$: expected "circle", got "square"'
    assert validate(0, {"const": None}) == "$: expected null, got 0"


# --- numbers --------------------------------------------------------------------------------------

@pytest.mark.parametrize(("schema", "good", "bad", "message"), [
    ({"minimum": 5}, 5, 4, "expected at least 5, got 4"),
    ({"maximum": 5}, 5, 5.5, "expected at most 5, got 5.5"),
    ({"exclusiveMinimum": 5}, 5.1, 5, "expected more than 5, got 5"),
    ({"exclusiveMaximum": 5}, 4, 5, "expected less than 5, got 5"),
    ({"minimum": 5, "exclusiveMinimum": True}, 6, 5, "expected more than 5, got 5"),  # draft 4
    ({"multipleOf": 3}, 9, 10, "expected a multiple of 3, got 10"),
    ({"multipleOf": 0.1}, 0.3, 0.35, "expected a multiple of 0.1, got 0.35"),
    ({"multipleOf": 0.5}, 2, 2.25, "expected a multiple of 0.5, got 2.25"),
])
def test_number_keywords(schema: dict[str, Any], good: float, bad: float, message: str) -> None:
    assert validate(good, schema) is None
    assert validate({"n": bad}, {"properties": {"n": schema}}) == "$.n: " + message


def test_number_keywords_skip_booleans_and_strings() -> None:
    assert validate(True, {"minimum": 5}) is None
    assert validate("1", {"maximum": 0}) is None


# --- strings --------------------------------------------------------------------------------------

def test_length_counts_characters() -> None:
    schema = {"minLength": 2, "maxLength": 3}
    assert validate("héé", schema) is None
    assert validate("é", schema) == "$: expected at least 2 characters, got 1"
    assert validate("abcd", schema) == "$: expected at most 3 characters, got 4"


def test_pattern_searches() -> None:
    assert validate("abc123", {"pattern": "[0-9]+"}) is None
    assert validate("abc", {"pattern": "^[0-9]+$"}) == '$: does not match pattern "^[0-9]+$"'


def test_invalid_pattern_is_ignored() -> None:
    assert validate("abc", {"pattern": "([a-"}) is None
    assert validate({"a": 1}, {"patternProperties": {"(": {"type": "string"}}}) is None


# --- combinators ----------------------------------------------------------------------------------

def test_any_of_merges_type_mismatches() -> None:
    schema = {"anyOf": [{"type": "string"}, {"type": "null"}]}
    assert validate(None, schema) is None
    assert validate(1, schema) == "$: expected string or null, got integer"


def test_any_of_reports_the_branch_that_got_deepest() -> None:
    circle = {"type": "object", "properties": {"kind": {"const": "circle"}, "r": {"type": "number"}}}
    square = {"type": "object", "properties": {"kind": {"const": "square"}}, "required": ["side"]}
    schema = {"anyOf": [square, circle]}
    assert validate({"kind": "circle", "r": 1}, schema) is None
    assert validate({"kind": "circle", "r": "1"}, schema) == "$.r: expected number, got string"


def test_any_of_without_a_clear_branch_lists_the_problems() -> None:
    schema = {"anyOf": [{"minimum": 10}, {"maximum": 0}]}
    assert validate(5, schema) == "$: matches no anyOf branch: expected at least 10, got 5; expected at most 0, got 5"


def test_one_of() -> None:
    schema = {"oneOf": [{"type": "integer"}, {"minimum": 2}]}
    assert validate(1, schema) is None
    assert validate(2.5, schema) is None
    assert validate(3, schema) == "$: matches oneOf branches 0 and 1; expected exactly one"
    assert validate("x", {"oneOf": [{"type": "integer"}, {"type": "boolean"}]}) == (
        "$: expected integer or boolean, got string")


def test_all_of() -> None:
    schema = {"allOf": [{"type": "integer"}, {"minimum": 2}]}
    assert validate(3, schema) is None
    assert validate(1, schema) == "$: expected at least 2, got 1"


def test_not() -> None:
    assert validate(1, {"not": {"type": "string"}}) is None
    assert validate("a", {"not": {"type": "string"}}) == '$: matches the "not" schema'


def test_boolean_schemas() -> None:
    assert validate({"anything": [1]}, True) is None
    assert validate(1, False) == "$: no value is allowed here"
    assert validate({"a": 1}, {"properties": {"a": False}}) == "$.a: no value is allowed here"


def test_nullable_allows_null() -> None:
    schema = {"type": "string", "nullable": True, "minLength": 1}
    assert validate(None, schema) is None
    assert validate("", schema) == "$: expected at least 1 characters, got 0"
    assert validate(None, {"type": "string"}) == "$: expected string, got null"


def test_unknown_keywords_are_ignored() -> None:
    schema = {"type": "string", "format": "email", "description": "d", "title": "t", "default": 1,
              "examples": [1], "strict": True, "x-vendor": {"type": "integer"}}
    assert validate("not an email", schema) is None


# --- $ref -----------------------------------------------------------------------------------------

TREE = {
    "$ref": "#/$defs/node",
    "$defs": {"node": {
        "type": "object",
        "properties": {"value": {"type": "integer"}, "children": {"type": "array", "items": {"$ref": "#/$defs/node"}}},
        "required": ["value"],
        "additionalProperties": False,
    }},
}


def _tree(depth: int) -> dict[str, Any]:
    node: dict[str, Any] = {"value": 0}
    for i in range(depth):
        node = {"value": i + 1, "children": [{"value": -1}, node]}
    return node


def test_ref_recursion_validates_a_tree() -> None:
    assert validate(_tree(5), TREE) is None
    bad = _tree(3)
    bad["children"][1]["children"][0]["value"] = "x"
    assert validate(bad, TREE) == "$.children[1].children[0].value: expected integer, got string"


def test_ref_to_definitions_and_escaped_pointers() -> None:
    schema = {"definitions": {"a/b": {"type": "string"}, "c~d": {"type": "integer"}},
              "properties": {"x": {"$ref": "#/definitions/a~1b"}, "y": {"$ref": "#/definitions/c~0d"}}}
    assert validate({"x": "s", "y": 1}, schema) is None
    assert validate({"x": 1}, schema) == "$.x: expected string, got integer"
    assert validate({"y": "s"}, schema) == "$.y: expected integer, got string"


def test_ref_to_root() -> None:
    schema = {"type": "array", "items": {"anyOf": [{"type": "integer"}, {"$ref": "#"}]}}
    assert validate([1, [2, [3]]], schema) is None
    assert validate([1, [2, ["x"]]], schema) is not None


def test_ref_siblings_apply_too() -> None:
    schema = {"$defs": {"s": {"type": "string"}}, "$ref": "#/$defs/s", "maxLength": 2}
    assert validate("abc", schema) == "$: expected at most 2 characters, got 3"


def test_dangling_and_remote_refs_are_ignored() -> None:
    assert validate(1, {"$ref": "#/$defs/missing"}) is None
    assert validate(1, {"$ref": "https://example.com/schema.json"}) is None
    assert validate(1, {"$ref": 7}) is None


def test_depth_is_bounded() -> None:
    assert validate(1, {"$ref": "#"}) == "$: schema nesting too deep"
    assert validate(_tree(MAX_DEPTH // 3 - 2), TREE) is None
    too_deep = validate(_tree(MAX_DEPTH), TREE)
    assert too_deep is not None and too_deep.endswith(": schema nesting too deep")


def test_depth_problem_is_not_absorbed_by_combinators() -> None:
    assert validate(1, {"not": {"$ref": "#"}}) == "$: schema nesting too deep"
    assert validate(1, {"anyOf": [{"$ref": "#"}, {"type": "integer"}]}) == "$: schema nesting too deep"


def test_shared_definitions_stay_linear() -> None:
    # Each level tries the next twice: 2**30 branches without memoizing $ref outcomes.
    defs: dict[str, Any] = {f"d{i}": {"anyOf": [{"$ref": f"#/$defs/d{i + 1}"}] * 2} for i in range(30)}
    defs["d30"] = {"type": "string"}
    assert validate(1, {"$defs": defs, "$ref": "#/$defs/d0"}) == "$: expected string, got integer"


# --- robustness -----------------------------------------------------------------------------------

@pytest.mark.parametrize("schema", [
    {"type": 5}, {"properties": []}, {"properties": {"a": 5}}, {"required": "a"}, {"required": [1, None]},
    {"items": "x"}, {"prefixItems": {}}, {"minItems": "2"}, {"minItems": -1}, {"minItems": True},
    {"enum": "abc"}, {"anyOf": []}, {"anyOf": {}}, {"oneOf": [1, 2]}, {"allOf": "x"}, {"not": 3},
    {"multipleOf": 0}, {"multipleOf": -2}, {"multipleOf": float("inf")}, {"minimum": "3"},
    {"minimum": float("nan")}, {"pattern": 3}, {"patternProperties": {"a": 1}}, {"additionalProperties": 3},
    {"$ref": "#/properties/0/x"}, {"nullable": "yes"}, {"uniqueItems": "yes"},
])
def test_malformed_schema_parts_are_ignored(schema: dict[str, Any]) -> None:
    for instance in (None, True, 0, 2.5, "s", [1, [2]], {"a": {"b": 1}}):
        assert validate(instance, schema) is None


def test_exotic_instances_do_not_raise() -> None:
    assert validate(object(), {"type": "object"}) == "$: expected object, got object"
    assert validate((1, 2), {"type": "array", "items": {"type": "integer"}}) is None
    assert validate({1: "a", (2, 3): "b"}, {"additionalProperties": False}) == "$[1]: additional property not allowed"
    assert validate(10**400, {"maximum": 1e308}) == "$: expected at most 1e+308, got 1" + "0" * 58 + "…"
    assert validate(10**400 + 1, {"multipleOf": 0.5}) is None
    assert validate(10**400, {"multipleOf": 3.0}) == "$: expected a multiple of 3.0, got 1" + "0" * 58 + "…"
    assert validate(10**5000, {"maximum": 10**400}) == "$: expected at most 1" + "0" * 58 + "…, got <int>"
    deep: list[Any] = []
    for _ in range(5000):
        deep = [deep]
    assert validate(deep, {"const": []}) == "$: nesting too deep"


json_leaves = (st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=6)
               | st.sampled_from(["#", "#/$defs/a", "#/definitions/b", "#/properties/p", "#/items/0", "http://x",
                                  "^a", "(", "[a-", "\\d+", "a{2,1}", "string", "integer", "null"]))
json_values = st.recursive(
    json_leaves, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=4), inner, max_size=4),
    max_leaves=12,
)
type_names = st.sampled_from(["null", "boolean", "integer", "number", "string", "array", "object", "foo"])


def _schemas(sub: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Schemas of every supported keyword, each value either plausible or arbitrary JSON."""
    def either(plausible: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
        return plausible | json_values

    names = st.text(max_size=3)
    number = st.integers(-5, 5) | st.floats(-5, 5) | st.sampled_from([0.1, 0, -1, float("inf")])
    count = st.integers(-1, 4)
    keywords = {
        "type": either(type_names | st.lists(type_names, max_size=3)),
        "properties": either(st.dictionaries(names, sub, max_size=3)),
        "required": either(st.lists(names, max_size=3)),
        "additionalProperties": either(st.booleans() | sub),
        "patternProperties": either(st.dictionaries(st.sampled_from(["^a", "(", "b$", ""]), sub, max_size=2)),
        "items": either(sub | st.lists(sub, max_size=2)),
        "prefixItems": either(st.lists(sub, max_size=2)),
        "minItems": either(count), "maxItems": either(count), "uniqueItems": either(st.booleans()),
        "enum": either(st.lists(json_values, max_size=3)), "const": json_values,
        "anyOf": either(st.lists(sub, max_size=3)), "oneOf": either(st.lists(sub, max_size=3)),
        "allOf": either(st.lists(sub, max_size=3)), "not": either(sub),
        "$ref": either(st.sampled_from(["#", "#/$defs/a", "#/definitions/b", "#/$defs/missing", "#/properties/p"])),
        "minimum": either(number), "maximum": either(number), "exclusiveMinimum": either(number | st.booleans()),
        "exclusiveMaximum": either(number | st.booleans()), "multipleOf": either(number),
        "minLength": either(count), "maxLength": either(count), "pattern": either(st.sampled_from(["^a", "(", "\\d"])),
        "minProperties": either(count), "maxProperties": either(count), "nullable": either(st.booleans()),
    }
    return st.booleans() | st.fixed_dictionaries({}, optional=keywords)


schemas: st.SearchStrategy[Any] = st.recursive(st.booleans() | st.just({}), _schemas, max_leaves=8)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(instance=json_values, schema=schemas, defs=st.dictionaries(st.sampled_from(["a", "b"]), schemas, max_size=2))
def test_validate_never_raises(instance: Any, schema: Any, defs: dict[str, Any]) -> None:
    if isinstance(schema, dict):
        schema = {**schema, "$defs": defs, "definitions": {"b": defs.get("b", True)}}
    result = validate(instance, schema)
    assert result is None or (result.startswith("$") and "cannot validate" not in result)


# Well-formed schemas without the float subtleties of multipleOf: the reference implementation agrees.
small_numbers = st.integers(-4, 4) | st.sampled_from([0.5, 2.0, -1.5])
plain_values = st.recursive(
    st.none() | st.booleans() | small_numbers | st.sampled_from(["", "a", "ab", "b1", "abc"]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(["a", "b", "ab"]), inner, max_size=3),
    max_leaves=10,
)


def _well_formed(sub: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    known_types = st.sampled_from(["null", "boolean", "integer", "number", "string", "array", "object"])
    keys = st.sampled_from(["a", "b", "ab"])
    count = st.integers(0, 3)
    keywords = {
        "type": known_types | st.lists(known_types, min_size=1, max_size=2, unique=True),
        "properties": st.dictionaries(keys, sub, max_size=2), "required": st.lists(keys, max_size=2, unique=True),
        "additionalProperties": sub,
        "patternProperties": st.dictionaries(st.sampled_from(["^a", "b$"]), sub, max_size=2),
        "items": sub, "prefixItems": st.lists(sub, max_size=2), "minItems": count, "maxItems": count,
        "uniqueItems": st.booleans(), "enum": st.lists(plain_values, min_size=1, max_size=3), "const": plain_values,
        "anyOf": st.lists(sub, min_size=1, max_size=3), "oneOf": st.lists(sub, min_size=1, max_size=3),
        "allOf": st.lists(sub, min_size=1, max_size=2), "not": sub,
        "minimum": small_numbers, "maximum": small_numbers, "exclusiveMinimum": small_numbers,
        "exclusiveMaximum": small_numbers, "multipleOf": st.integers(1, 3),
        "minLength": count, "maxLength": count, "pattern": st.sampled_from(["^a", "b", "[0-9]"]),
        "minProperties": count, "maxProperties": count,
    }
    return st.booleans() | st.fixed_dictionaries({}, optional=keywords)


@settings(max_examples=600, deadline=None)
@given(instance=plain_values, schema=st.recursive(st.booleans() | st.just({}), _well_formed, max_leaves=6))
def test_agrees_with_the_reference_implementation(instance: Any, schema: Any) -> None:
    expected = reference.Draft202012Validator(schema).is_valid(instance)
    assert (validate(instance, schema) is None) == expected
