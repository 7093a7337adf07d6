"""The public surface is deliberate: this test pins it."""

import switchboard

EXPECTED = {
    "ChatRequest", "ChatResponse", "ChatStream", "Config", "ConfigError", "ContextLengthExceeded",
    "EmbeddingRequest", "EmbeddingResponse", "Feedback", "Gateway", "ImagePart", "InvalidRequest", "Message",
    "ModelNotFound",
    "RateLimited", "RequestContext", "ResponseFormat", "StreamFinish", "StreamStart", "StreamUsage",
    "SwitchboardError", "TextDelta", "TextPart", "ToolCall", "ToolCallDelta", "ToolCallStart", "ToolChoice",
    "ToolSpec", "UpstreamError", "Usage", "__version__", "config_from_environment", "load_config", "parse_config",
}


def test_all_is_pinned() -> None:
    assert set(switchboard.__all__) == EXPECTED
    for name in switchboard.__all__:
        assert hasattr(switchboard, name), name
