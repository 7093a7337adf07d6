"""The input-token estimate behind Anthropic's token count: everything the model reads, whatever its model."""

from __future__ import annotations

import orjson

from switchboard.routing.features import IMAGE_TOKENS, estimate_input_tokens
from switchboard.schemas.canonical import ChatRequest, ImagePart, Message, TextPart, ToolCall, ToolSpec


def test_every_part_the_model_reads_counts() -> None:
    spec = ToolSpec("lookup", "Find a word", {"type": "object", "properties": {"w": {"type": "string"}}})
    req = ChatRequest(model="m", tools=[spec], messages=[
        Message("system", [TextPart("Be brief.")]),
        Message("user", [TextPart("Define ozone."), ImagePart("data:image/png;base64,AAAA")]),
        Message("assistant", [], tool_calls=[ToolCall("c1", "lookup", '{"w": "ozone"}')]),
        Message("tool", [TextPart("O3, a gas.")], tool_call_id="c1"),
        Message("assistant", [], refusal="No."),
    ])
    chars = (len("Be brief.") + len("Define ozone.") + len("lookup") + len('{"w": "ozone"}') + len("O3, a gas.")
             + len("No.") + len("lookup") + len("Find a word") + len(orjson.dumps(spec.parameters)))
    assert estimate_input_tokens(req) == (chars + 3) // 4 + IMAGE_TOKENS


def test_an_empty_prompt_counts_nothing_and_one_character_counts_one() -> None:
    assert estimate_input_tokens(ChatRequest(model="m", messages=[])) == 0
    assert estimate_input_tokens(ChatRequest(model="m", messages=[Message("user", [TextPart("a")])])) == 1
