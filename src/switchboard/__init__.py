"""Switchboard: an AI router — one OpenAI- and Anthropic-compatible endpoint in front of many LLM providers.

Library use, without the HTTP server::

    import os
    from switchboard import ChatRequest, Gateway, Message, TextPart, load_config

    async with Gateway(load_config("switchboard.yaml", env=os.environ)) as gw:
        resp = await gw.chat(ChatRequest(model="fast", messages=[Message("user", [TextPart("Hello")])]))
        print(resp.choices[0].message.text())
"""

from switchboard.config.load import ConfigError, config_from_environment, load_config, parse_config
from switchboard.config.model import Config
from switchboard.errors import (
    ContextLengthExceeded,
    InvalidRequest,
    ModelNotFound,
    RateLimited,
    SwitchboardError,
    UpstreamError,
)
from switchboard.gateway import ChatStream, Gateway, RequestContext
from switchboard.routing.bandit import Feedback
from switchboard.schemas.canonical import (
    ChatRequest,
    ChatResponse,
    EmbeddingRequest,
    EmbeddingResponse,
    ImagePart,
    Message,
    ResponseFormat,
    StreamFinish,
    StreamStart,
    StreamUsage,
    TextDelta,
    TextPart,
    ToolCall,
    ToolCallDelta,
    ToolCallStart,
    ToolChoice,
    ToolSpec,
    Usage,
)

__version__ = "0.1.0"

__all__ = [
    "ChatRequest",
    "ChatResponse",
    "ChatStream",
    "Config",
    "ConfigError",
    "ContextLengthExceeded",
    "EmbeddingRequest",
    "EmbeddingResponse",
    "Feedback",
    "Gateway",
    "ImagePart",
    "InvalidRequest",
    "Message",
    "ModelNotFound",
    "RateLimited",
    "RequestContext",
    "ResponseFormat",
    "StreamFinish",
    "StreamStart",
    "StreamUsage",
    "SwitchboardError",
    "TextDelta",
    "TextPart",
    "ToolCall",
    "ToolCallDelta",
    "ToolCallStart",
    "ToolChoice",
    "ToolSpec",
    "UpstreamError",
    "Usage",
    "__version__",
    "config_from_environment",
    "load_config",
    "parse_config",
]
