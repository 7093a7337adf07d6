"""What the request parsers' short ways share: the common body shape, checked and built in one pass.

Each dialect's parser tries a short way for bodies of the common shape before its full way (which checks every
field and names the first bad one); the short way gives up, and leaves the body to the full way, at anything
else. Property tests hold the two ways to the same request or the same error.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from switchboard.schemas.canonical import Message, Role, TextPart

__all__ = ["text_turns"]


def text_turns(items: list[Any], roles: Mapping[str, Role], messages: list[Message]) -> bool:
    """Append to ``messages`` one message per item that is exactly a role in ``roles`` and text content;
    ``False`` at the first item of any other shape."""
    for item in items:
        if type(item) is not dict or len(item) != 2:
            return False
        role = item.get("role")
        content = item.get("content")
        if type(role) is not str or type(content) is not str or role not in roles:
            return False
        messages.append(Message(roles[role], [TextPart(content)]))
    return True
