"""One-off: vendor the OpenAI response schemas the ingress tests validate against.

Reads ``openapi.yaml`` of openai/openai-openapi (commit f85dbe2, see README.md), keeps the component
schemas listed in ``ROOTS`` and everything they ``$ref`` transitively, turns OpenAPI 3.0
``nullable: true`` into ``anyOf: [<schema>, {"type": "null"}]`` (the document claims 3.1 but mixes
both), drops prose (``description``, examples, ``x-*`` extensions) and applies ``GAPS``: the known
places where the spec rejects what the real API sends. The result is ``openai_schemas.json``, shaped
``{"components": {"schemas": {...}}}`` so that ``#/components/schemas/X`` references still resolve.

Usage::

    python tests/contract/extract_schemas.py ../shared/openai-openapi/openapi.yaml
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

ROOTS = [
    "CreateChatCompletionResponse",
    "CreateChatCompletionStreamResponse",
    "ErrorResponse",
    "CreateEmbeddingResponse",
    "ListModelsResponse",
    "Model",
]
REF_PREFIX = "#/components/schemas/"
OUT = Path(__file__).with_name("openai_schemas.json")

# Keywords whose value is a map of name -> schema, a single schema, or a list of schemas.
_SCHEMA_MAPS = {"properties", "patternProperties", "$defs", "dependentSchemas"}
_SCHEMA_ONE = {
    "items",
    "additionalProperties",
    "not",
    "if",
    "then",
    "else",
    "contains",
    "propertyNames",
    "unevaluatedProperties",
    "unevaluatedItems",
}
_SCHEMA_LIST = {"allOf", "anyOf", "oneOf", "prefixItems"}
# Prose and OpenAPI-only annotations; jsonschema ignores them, the diff reviewer need not read them.
_DROP = {"description", "example", "examples", "discriminator", "nullable"}

Schema = dict[str, Any]


def _nullable(schema: Schema) -> Schema:
    return {"anyOf": [schema, {"type": "null"}]}


def _allow_null_property(schema_name: str, prop: str) -> Callable[[dict[str, Schema]], None]:
    def patch(schemas: dict[str, Schema]) -> None:
        props = schemas[schema_name]["properties"]
        props[prop] = _nullable(props[prop])

    return patch


def _embedding_base64(schemas: dict[str, Schema]) -> None:
    props = schemas["Embedding"]["properties"]
    props["embedding"] = {"anyOf": [props["embedding"], {"type": "string"}]}


# Known spec-vs-reality gaps. Each entry: (what the real API does, patch making the spec accept it).
GAPS: list[tuple[str, Callable[[dict[str, Schema]], None]]] = [
    # The API sends "system_fingerprint": null for many models; the spec types it as a plain string.
    (
        "system_fingerprint may be null (response)",
        _allow_null_property("CreateChatCompletionResponse", "system_fingerprint"),
    ),
    (
        "system_fingerprint may be null (chunk)",
        _allow_null_property("CreateChatCompletionStreamResponse", "system_fingerprint"),
    ),
    # With encoding_format=base64 the API returns the vector as a base64 string of little-endian
    # float32s (the official SDK asks for base64 by default and decodes it); the spec only allows
    # an array of numbers.
    ("embedding may be a base64 string", _embedding_base64),
]


def _convert(node: Any) -> Any:
    """Rewrite one schema: recurse into sub-schemas, drop prose, turn ``nullable`` into ``anyOf``."""
    if not isinstance(node, dict):
        return node
    out: Schema = {}
    for key, value in node.items():
        if key in _DROP or key.startswith("x-"):
            continue
        if key in _SCHEMA_MAPS:
            out[key] = {name: _convert(sub) for name, sub in value.items()}
        elif key in _SCHEMA_ONE:
            out[key] = _convert(value)
        elif key in _SCHEMA_LIST:
            out[key] = [_convert(sub) for sub in value]
        else:
            out[key] = value
    return _nullable(out) if node.get("nullable") is True else out


def _refs(node: Any, found: set[str]) -> None:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                found.add(value.removeprefix(REF_PREFIX))
            else:
                _refs(value, found)
    elif isinstance(node, list):
        for value in node:
            _refs(value, found)


def extract(spec: dict[str, Any]) -> dict[str, Any]:
    """The vendored document: the needed schemas, converted and patched."""
    every = spec["components"]["schemas"]
    needed: set[str] = set()
    todo = list(ROOTS)
    while todo:
        name = todo.pop()
        if name in needed:
            continue
        needed.add(name)
        found: set[str] = set()
        _refs(every[name], found)
        todo.extend(found - needed)
    schemas = {name: _convert(every[name]) for name in sorted(needed)}
    for _why, patch in GAPS:
        patch(schemas)
    return {
        "x-source": "github.com/openai/openai-openapi@f85dbe2 openapi.yaml (MIT), via extract_schemas.py",
        "x-gaps": [why for why, _patch in GAPS],
        "components": {"schemas": schemas},
    }


def main() -> None:
    source = Path(sys.argv[1] if len(sys.argv) > 1 else "../shared/openai-openapi/openapi.yaml")
    spec = yaml.load(source.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    OUT.write_text(json.dumps(extract(spec), indent=1, sort_keys=True) + "\n")
    print(f"wrote {OUT} ({OUT.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
