"""Validate what the gateway emits against OpenAI's own (vendored) response schemas.

Usage::

    validate("CreateChatCompletionResponse", body)  # raises jsonschema.ValidationError on mismatch
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

__all__ = ["schema_names", "validate"]

_DOC_URI = "urn:openai-openapi:f85dbe2"
_PATH = Path(__file__).with_name("openai_schemas.json")


@functools.cache
def _document() -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(_PATH.read_text())
    return doc


@functools.cache
def _validator(schema_name: str) -> Draft202012Validator:
    registry: Registry[Any] = Registry().with_resource(
        _DOC_URI, Resource.from_contents(_document(), default_specification=DRAFT202012)
    )
    if schema_name not in _document()["components"]["schemas"]:
        raise KeyError(f"schema {schema_name!r} is not vendored; add it to extract_schemas.ROOTS")
    schema = {"$ref": f"{_DOC_URI}#/components/schemas/{schema_name}"}
    return Draft202012Validator(schema, registry=registry)


def schema_names() -> list[str]:
    """The vendored component schema names."""
    return sorted(_document()["components"]["schemas"])


def validate(schema_name: str, instance: object) -> None:
    """Raise ``jsonschema.ValidationError`` (the most relevant one) if ``instance`` does not match."""
    _validator(schema_name).validate(instance)
