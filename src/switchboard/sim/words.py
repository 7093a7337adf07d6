"""Deterministic reply text and the sim's token arithmetic.

Replies are drawn from a fixed, precomputed cycle of words (with sentence punctuation) starting at an
offset derived from the prompt, so the same prompt always gets the same reply. One word is one token:
the first token is the bare word, every later token carries its leading space, so joining the tokens
gives the text.

Token counting is a deliberate, cheap estimate (no tokenizer):

* text: one token per whitespace-separated word;
* each message adds 4 tokens, and every prompt 3 more (the reply primer);
* an image, audio clip or file part counts 85 tokens;
* tool definitions count one token per 4 bytes of their JSON.

Usage::

    seed = text_seed(["Hello there"])
    reply_tokens(seed, 5)          # ['Quiet', ' river', ...]
    count_words("Hello there")     # 2
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Iterable

__all__ = [
    "IMAGE_TOKENS",
    "count_words",
    "json_pieces",
    "reply_tokens",
    "sample_words",
    "split_reply",
    "text_seed",
]

IMAGE_TOKENS = 85

_WORDS = (
    "the",
    "a",
    "quiet",
    "river",
    "runs",
    "past",
    "old",
    "stone",
    "bridges",
    "while",
    "light",
    "falls",
    "on",
    "green",
    "hills",
    "and",
    "small",
    "boats",
    "drift",
    "toward",
    "harbor",
    "every",
    "morning",
    "brings",
    "fresh",
    "bread",
    "from",
    "bakery",
    "near",
    "square",
    "where",
    "children",
    "play",
    "under",
    "tall",
    "trees",
    "wind",
    "carries",
    "songs",
    "of",
    "distant",
    "birds",
    "across",
    "fields",
    "farmers",
    "gather",
    "golden",
    "wheat",
    "before",
    "rain",
    "clouds",
    "arrive",
    "over",
    "mountains",
    "travelers",
    "rest",
    "in",
    "warm",
    "inns",
    "sharing",
    "stories",
    "about",
    "roads",
    "they",
    "walked",
    "lanterns",
    "glow",
    "softly",
    "along",
    "narrow",
    "streets",
    "as",
    "evening",
    "settles",
    "into",
    "calm",
    "night",
    "stars",
    "appear",
    "above",
    "sleeping",
    "town",
    "its",
    "clock",
    "tower",
    "keeps",
    "time",
    "for",
    "everyone",
    "who",
    "listens",
    "closely",
    "enough",
    "to",
    "hear",
    "gentle",
    "bells",
    "ring",
    "at",
    "dawn",
    "merchants",
    "open",
    "shops",
    "selling",
    "spices",
    "cloth",
    "copper",
    "pots",
    "music",
    "drifts",
    "through",
    "windows",
    "left",
    "open",
    "by",
    "painters",
    "working",
    "late",
    "with",
    "bright",
    "colors",
    "sea",
    "waves",
    "shape",
    "sandy",
    "shore",
    "gulls",
    "circle",
    "slowly",
    "high",
    "lighthouse",
    "guides",
    "ships",
    "home",
    "safely",
    "after",
    "long",
    "voyages",
    "sailors",
    "mend",
    "nets",
    "watch",
    "tides",
    "change",
    "winter",
    "snow",
    "covers",
    "rooftops",
    "smoke",
    "rises",
    "chimneys",
    "families",
    "gather",
    "around",
    "fires",
    "telling",
    "tales",
    "spring",
    "returns",
    "flowers",
    "bloom",
    "gardens",
    "bees",
    "hum",
    "busy",
    "paths",
    "lead",
    "forest",
    "deer",
    "graze",
    "meadow",
    "beyond",
    "ancient",
    "wall",
    "library",
    "holds",
    "books",
    "written",
    "scholars",
    "study",
    "maps",
    "stars",
    "planets",
    "numbers",
    "patterns",
    "ideas",
    "grow",
    "like",
    "seeds",
    "planted",
    "careful",
    "hands",
)

_CYCLE = 8192


def _build_cycle() -> tuple[list[str], list[str]]:
    """Words with sentence punctuation, from a fixed LCG (stable across Python versions)."""
    state = 0x2545F491
    words: list[str] = []
    left = 0
    for _ in range(_CYCLE):
        state = (state * 1103515245 + 12345) & 0x7FFFFFFF
        word = _WORDS[(state >> 7) % len(_WORDS)]
        if left == 0:
            word = word.capitalize()
            left = 6 + (state >> 3) % 9
        left -= 1
        if left == 0:
            word += "."
        words.append(word)
    first = [w[0].upper() + w[1:] for w in words]
    spaced = [" " + w for w in words]
    return first, spaced + spaced


_FIRST, _SPACED = _build_cycle()


def text_seed(texts: Iterable[str]) -> int:
    """A 32-bit seed from the prompt's text."""
    seed = 0
    for t in texts:
        seed = zlib.crc32(t.encode("utf-8", "replace"), seed)
    return seed


def reply_tokens(seed: int, n: int) -> list[str]:
    """``n`` reply tokens for ``seed``; ``"".join`` of them is the reply text."""
    if n <= 0:
        return []
    off = seed % _CYCLE
    out = [_FIRST[off]]
    rest = n - 1
    start = off + 1
    while rest > 0:
        take = min(rest, _CYCLE)
        out += _SPACED[start : start + take]
        rest -= take
        start = (start + take) % _CYCLE
    return out


def sample_words(seed: int, n: int) -> str:
    """``n`` lower-case words without punctuation, for strings inside generated JSON."""
    off = seed % _CYCLE
    return " ".join(_SPACED[off + i][1:].rstrip(".").lower() for i in range(n))


_REPLY_TOKEN = re.compile(r"\s*\S+\s*$|\s*\S+")


def split_reply(text: str) -> list[str]:
    """Split a scripted reply into word tokens whose concatenation is exactly ``text``."""
    tokens = _REPLY_TOKEN.findall(text)
    if not tokens and text:
        return [text]
    return tokens


def json_pieces(text: str, size: int = 4) -> list[str]:
    """Cut JSON text into ~token-sized pieces (4 characters, the usual chars-per-token figure)."""
    return [text[i : i + size] for i in range(0, len(text), size)]


def count_words(text: str) -> int:
    """Tokens in ``text`` by the sim's estimate: whitespace-separated words."""
    return len(text.split())
