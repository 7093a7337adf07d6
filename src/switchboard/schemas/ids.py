"""Identifiers made on the hot path: unique across processes, with no system call per id.

A random per-process part (read once from the OS) is followed by a counter, so ids never repeat
within a process and collide across processes only with a 48-bit chance.

Usage::

    new_id("chatcmpl-")   # 'chatcmpl-3f9a0c1b2d4e000000000001'
"""

from __future__ import annotations

import itertools
import secrets

__all__ = ["new_id"]

_PROCESS = secrets.token_hex(6)
_counter = itertools.count(1)


def new_id(prefix: str) -> str:
    """``prefix`` followed by 24 hex digits."""
    return f"{prefix}{_PROCESS}{next(_counter):012x}"
