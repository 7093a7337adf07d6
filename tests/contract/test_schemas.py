"""The vendored OpenAI schemas: self-contained, nullable rewritten, gaps patched, reproducible."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from jsonschema import ValidationError

from tests.contract import extract_schemas
from tests.contract.openapi import schema_names, validate

SPEC = Path(__file__).parents[3] / "shared" / "openai-openapi" / "openapi.yaml"

CHUNK = {
    "id": "chatcmpl-1",
    "object": "chat.completion.chunk",
    "created": 1,
    "model": "m",
    "choices": [{"index": 0, "delta": {"content": "x"}, "logprobs": None, "finish_reason": None}],
}


def test_every_root_and_reference_is_vendored() -> None:
    names = set(schema_names())
    assert set(extract_schemas.ROOTS) <= names
    text = Path(extract_schemas.OUT).read_text()
    assert '"nullable"' not in text
    refs: set[str] = set()
    extract_schemas._refs(json.loads(text), refs)
    assert refs <= names


def test_nullable_was_rewritten() -> None:
    validate("CreateChatCompletionStreamResponse", {**CHUNK, "usage": None})
    validate(
        "CreateChatCompletionStreamResponse",
        {**CHUNK, "choices": [{**CHUNK["choices"][0], "finish_reason": None}]},
    )


@pytest.mark.parametrize(
    ("schema", "instance"),
    [
        ("CreateChatCompletionStreamResponse", {**CHUNK, "system_fingerprint": None}),
        ("CreateEmbeddingResponse", {
            "object": "list", "model": "e", "usage": {"prompt_tokens": 1, "total_tokens": 1},
            "data": [{"object": "embedding", "index": 0, "embedding": "AAAAPw=="}],
        }),
    ],
)  # fmt: skip
def test_known_gaps_are_patched(schema: str, instance: Any) -> None:
    validate(schema, instance)


@pytest.mark.parametrize(
    ("schema", "instance"),
    [
        ("CreateChatCompletionStreamResponse", {**CHUNK, "object": "chat.completion"}),
        ("CreateChatCompletionStreamResponse", {**CHUNK, "choices": [{"index": 0, "delta": {}}]}),
        ("ErrorResponse", {"error": {"message": "m", "type": "t", "param": None}}),
        ("ListModelsResponse", {"object": "list", "data": [{"id": "m", "object": "model"}]}),
    ],
)
def test_mismatches_are_rejected(schema: str, instance: Any) -> None:
    with pytest.raises(ValidationError):
        validate(schema, instance)


@pytest.mark.skipif(not SPEC.exists(), reason="the upstream spec is only available next to the work tree")
def test_vendored_file_is_reproducible() -> None:
    import yaml

    spec = yaml.load(SPEC.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    assert extract_schemas.extract(spec) == json.loads(Path(extract_schemas.OUT).read_text())
