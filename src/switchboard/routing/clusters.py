"""Prompt → cluster key: the context the feedback bandit learns in, computed cheaply and deterministically.

:class:`PromptClusterer` hashes the words and word pairs of a prompt into ``K = 2**bits`` buckets with
SimHash (random-hyperplane LSH over hashed features): each feature votes +1 or −1 on each of ``bits``
hyperplanes, chosen by bits of a fixed CRC-32 of the feature (never Python's salted ``hash()``), and
the signs of the totals form the key. So the same prompt gets the same key in every process, release
and machine, given the same ``bits``, ``seed`` and ``max_chars``.

What it gives, honestly:

- Two prompts share a hyperplane bit with probability ``1 − θ/π``, θ being the angle between their
  binary bag-of-features vectors, so they share a key with probability ``(1 − θ/π) ** bits``. Prompts
  that share most of their words (the same template with a different name or number) usually land
  together; unrelated prompts land together about as often as chance allows (≈ 1/K), somewhat more
  often because they share common words. It is lexical: a paraphrase with other words is another
  cluster, and a prompt near a hyperplane can flip key on a one-word edit.
- Clusters are hash buckets, not topics: their sizes are uneven and a key names nothing. When the
  gateway knows the semantic route of a request, :meth:`PromptClusterer.context` uses that instead.
- Cost is bounded: only ``max_chars`` characters are read (half from the start, half from the end,
  where system prompts and the actual question tend to be), whatever the prompt's length.

Usage::

    clusterer = PromptClusterer(bits=4)
    clusterer.key("Translate this paragraph into French: ...")      # e.g. "c07"
    clusterer.context(prompt_text, route="code")                     # "route:code"
"""

from __future__ import annotations

import re
import zlib
from collections import Counter

__all__ = ["PromptClusterer"]

_WORD = re.compile(r"\w+")
_MIX = 0x9E3779B1  # 2**32 / golden ratio
# Words nearly every English prompt holds: they would push every prompt the same way on every plane.
_STOP = frozenset({
    "a", "an", "and", "are", "as", "at", "be", "but", "by", "can", "do", "for", "from", "has", "have", "how", "i",
    "if", "in", "is", "it", "its", "me", "my", "no", "not", "of", "on", "or", "our", "so", "that", "the", "their",
    "them", "then", "there", "these", "they", "this", "to", "was", "we", "were", "what", "when", "which", "who",
    "why", "will", "with", "you", "your",
})


class PromptClusterer:
    """Maps prompt text to one of ``2**bits`` cluster keys (``"c00"`` … ``"c15"`` for the default 4 bits;
    ``bits=0`` puts every prompt in ``"c0"``, for a bandit that ignores the prompt).

    ``seed`` picks another family of hyperplanes (a different but equally valid partition);
    ``max_chars`` bounds the work per prompt. Pure and thread-safe.

    Usage::

        PromptClusterer(bits=4, seed=0).key(text)
    """

    def __init__(self, bits: int = 4, *, seed: int = 0, max_chars: int = 2048) -> None:
        if not 0 <= bits <= 16:
            raise ValueError(f"bits must be in 0..16, got {bits}")
        if max_chars < 16:
            raise ValueError(f"max_chars must be at least 16, got {max_chars}")
        if not 0 <= seed < 2**32:
            raise ValueError(f"seed must be in 0..2**32-1, got {seed}")
        self.bits = bits
        self.seed = seed
        self.max_chars = max_chars
        self._mask = (1 << bits) - 1
        self._width = len(str(self._mask))
        # Every feature hash continues a CRC seeded here, so another seed is another set of planes.
        self._start = zlib.crc32(seed.to_bytes(4, "little"))

    @property
    def size(self) -> int:
        """How many cluster keys there are (``K = 2**bits``)."""
        return self._mask + 1

    @property
    def signature(self) -> str:
        """Names the partition: keys from clusterers with another signature mean other things.

        Put it in the name the bandit's state is saved under, so changing ``bits`` starts afresh.
        """
        return f"simhash1-b{self.bits}-s{self.seed}-m{self.max_chars}"

    def keys(self) -> list[str]:
        """Every key this clusterer can return, in order."""
        return [self._name(i) for i in range(self.size)]

    def key(self, text: str) -> str:
        """The cluster key of ``text``; a prompt without words gets the first key, as do ties on a plane."""
        if not self.bits:
            return self._name(0)
        if len(text) > self.max_chars:
            half = self.max_chars // 2
            text = text[:half] + " " + text[-half:]
        words = [w for w in _WORD.findall(text.lower()) if w not in _STOP]
        start = self._start
        crc32 = zlib.crc32
        features: set[int] = set()
        prev = -1
        for word in words:
            data = word.encode()
            h = crc32(data, start)
            features.add(h)
            if prev >= 0:
                # The CRC continued from the previous word's: the hash of "previous word".
                features.add(crc32(b" " + data, prev))
            prev = h
        # CRC is linear over GF(2); a multiplicative (Fibonacci) mix takes its top bits as the plane
        # signs. Tally each sign pattern once, then vote per plane over the distinct patterns: one
        # dict update per feature instead of ``bits`` of them.
        shift = 32 - self.bits
        patterns = Counter(((h * _MIX) & 0xFFFFFFFF) >> shift for h in features)
        index = 0
        for plane in range(self.bits):
            bit = 1 << plane
            vote = sum(n if p & bit else -n for p, n in patterns.items())
            if vote > 0:
                index |= bit
        return self._name(index)

    def context(self, text: str | None = None, *, route: str | None = None) -> str:
        """The bandit context of a request: ``"route:<name>"`` when the gateway knows its semantic
        route, else the cluster key of ``text``.

        The prefix keeps a route called ``c07`` apart from cluster ``c07``.
        """
        if route is not None:
            return f"route:{route}"
        if text is None:
            raise ValueError("context() needs the prompt text or a route name")
        return self.key(text)

    def _name(self, index: int) -> str:
        return f"c{index:0{self._width}d}"
