"""Deterministic, unit-length embedding vectors in which texts sharing words point the same way.

A text's vector is the normalised sum of its words' pseudo-random vectors (from SHAKE-256 of the
lower-cased word), so identical texts embed identically and texts that share words are closer than
texts that do not. The sum runs on Python big integers (one packed integer per word, 32 bits per
component) so it costs one C-level addition per word whatever the dimension.

Usage::

    v = embed("the quiet river", 256)    # list of 256 floats, L2 norm 1.0
"""

from __future__ import annotations

import functools
import hashlib
import math
import re
import sys
from array import array

__all__ = ["embed"]

_WORD = re.compile(r"\w+")


@functools.lru_cache(maxsize=50_000)
def _word_vector(word: str, dim: int) -> int:
    digest = hashlib.shake_256(word.encode("utf-8", "replace")).digest(dim)
    buf = bytearray(dim * 4)
    buf[0::4] = digest  # each byte in the low byte of a little-endian 32-bit field
    return int.from_bytes(buf, "little")


def embed(text: str, dim: int) -> list[float]:
    """A unit vector of ``dim`` floats for ``text``."""
    words = _WORD.findall(text.lower()) or [text]
    total = 0
    for w in words:
        total += _word_vector(w, dim)
    fields = array("I")
    fields.frombytes(total.to_bytes(dim * 4, "little"))
    if sys.byteorder == "big":
        fields.byteswap()
    centre = 127.5 * len(words)
    values = [f - centre for f in fields]
    norm = math.sqrt(math.fsum(v * v for v in values)) or 1.0
    return [v / norm for v in values]
