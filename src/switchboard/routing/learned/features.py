"""Prompt features for the learned router: hashed word and character n-grams, kept apart for the final
question and for the rest of the prompt (few-shot demonstrations, instructions), plus coarse length tokens.

Pure Python and deterministic across processes: tokens are hashed with CRC-32 (``zlib.crc32``), never with
the salted built-in ``hash()``. The work is bounded: only the last ``question_chars`` characters of the final
question and the last ``context_chars`` characters before it are looked at, so a 4k-token prompt costs about
what a 1k-token one does.

Usage::

    config = FeatureConfig()
    vector = extract("Write a python function to reverse a list.", config)  # {bucket: value}
"""

from __future__ import annotations

import math
import re
import zlib
from dataclasses import asdict, dataclass
from itertools import pairwise
from typing import Any

__all__ = ["FeatureConfig", "extract", "split_prompt"]

_WORD = re.compile(r"\w+|[^\w\s]")


@dataclass(frozen=True, slots=True)
class FeatureConfig:
    """What :func:`extract` computes; stored in the model file so inference matches training."""

    #: Hash space; buckets are ``crc32(namespace + token) % buckets``.
    buckets: int = 1 << 20
    #: The last characters of the final question that are looked at.
    question_chars: int = 2000
    #: The last characters of the text before the final question that are looked at.
    context_chars: int = 2000
    #: Word n-gram orders of the final question (1 = unigrams, 2 = unigrams and bigrams).
    question_word_ngrams: int = 2
    #: The last characters of the final question whose words get character n-grams (the costliest block).
    char_chars: int = 800
    #: Character n-gram lengths of the final question's words (padded with spaces); empty: none.
    char_ngrams: tuple[int, ...] = (3, 4, 5)
    #: Weights of the blocks: question words, question characters, context words, length tokens.
    weights: tuple[float, float, float, float] = (1.0, 0.5, 0.5, 0.5)

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (for the model file)."""
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> FeatureConfig:
        """The inverse of :meth:`to_json`."""
        return cls(
            buckets=int(data["buckets"]),
            question_chars=int(data["question_chars"]),
            context_chars=int(data["context_chars"]),
            question_word_ngrams=int(data["question_word_ngrams"]),
            char_chars=int(data["char_chars"]),
            char_ngrams=tuple(int(n) for n in data["char_ngrams"]),
            weights=(float(data["weights"][0]), float(data["weights"][1]), float(data["weights"][2]),
                     float(data["weights"][3])),
        )


def split_prompt(prompt: str) -> tuple[str, str]:
    """(context, question): the question is the last blank-line-separated block that has words in it —
    in a few-shot prompt the one that differs from prompt to prompt; the context is everything before."""
    text = prompt.strip()
    cut = len(text)
    while True:
        at = text.rfind("\n\n", 0, cut)
        if at < 0:
            return "", text
        if any(ch.isalnum() for ch in text[at:cut]) and cut - at > 40:
            return text[:at], text[at:].strip()
        cut = at


def extract(prompt: str, config: FeatureConfig) -> dict[int, float]:
    """The sparse feature vector of ``prompt``: bucket → value, each block L2-normalised then weighted."""
    context, question = split_prompt(prompt)
    question = question[-config.question_chars :]
    context = context[-config.context_chars :]
    q_words = _WORD.findall(question.lower())
    c_words = _WORD.findall(context.lower())
    w_q, w_c, w_x, w_len = config.weights
    out: dict[int, float] = {}
    if w_q:
        grams = ["qw " + w for w in q_words]
        if config.question_word_ngrams >= 2:
            grams += ["qb " + a + " " + b for a, b in pairwise(q_words)]
        _add_block(out, grams, w_q, config.buckets)
    if w_c and config.char_ngrams:
        grams = []
        for word in (q_words if len(question) <= config.char_chars else _WORD.findall(
                question[-config.char_chars :].lower())):
            padded = " " + word + " "
            for n in config.char_ngrams:
                grams += ["qc " + padded[i : i + n] for i in range(max(1, len(padded) - n + 1))]
        _add_block(out, grams, w_c, config.buckets)
    if w_x and c_words:
        _add_block(out, ["xw " + w for w in c_words], w_x, config.buckets)
    if w_len:
        blocks = prompt.count("\n\n")
        grams = [
            f"len prompt {_log_bin(len(prompt))}",
            f"len question {_log_bin(len(question))}",
            f"len demos {min(blocks, 12)}",
            f"len lines {min(question.count(chr(10)), 12)}",
        ]
        _add_block(out, grams, w_len, config.buckets)
    return out


def _log_bin(n: int) -> int:
    return int(2 * math.log2(n + 1))


def _add_block(out: dict[int, float], grams: list[str], weight: float, buckets: int) -> None:
    counts: dict[int, int] = {}
    for g in grams:
        b = zlib.crc32(g.encode()) % buckets
        counts[b] = counts.get(b, 0) + 1
    if not counts:
        return
    values = {b: 1.0 + math.log(c) for b, c in counts.items()}  # sublinear term frequency
    norm = math.sqrt(sum(v * v for v in values.values()))
    scale = weight / norm
    for b, v in values.items():
        out[b] = out.get(b, 0.0) + v * scale
