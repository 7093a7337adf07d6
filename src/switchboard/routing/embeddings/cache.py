"""A bounded, thread-safe LRU cache of sentence vectors in front of any :class:`Encoder`.

Routing traffic repeats itself (the same system-prompted task, retries, canned questions); a hit costs a
dictionary lookup instead of a forward pass.

Usage::

    encoder = CachedEncoder(MiniLMEncoder(), max_entries=4096)
    encoder.encode(["hi"]); encoder.encode(["hi"])  # the second call is a hit
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence
from typing import TYPE_CHECKING

from switchboard.routing.embeddings.encoder import Encoder

if TYPE_CHECKING:
    import numpy as np
    from numpy.typing import NDArray

__all__ = ["CachedEncoder"]


class CachedEncoder:
    """Wraps an encoder; remembers the vectors of the last ``max_entries`` distinct texts (exact match).

    Memory is bounded: at most ``max_entries`` vectors, and texts longer than ``max_text_chars`` are
    encoded but never stored (their key alone could be large). Misses are encoded outside the lock, so a
    slow encode does not hold up hits in other threads; two threads missing the same text at once may
    both encode it (the result is the same).

    Usage::

        cached = CachedEncoder(encoder, max_entries=4096)
        vectors = cached.encode(texts)
    """

    def __init__(self, encoder: Encoder, *, max_entries: int = 4096, max_text_chars: int = 4096) -> None:
        if max_entries < 1:
            raise ValueError(f"max_entries must be at least 1, got {max_entries}")
        self._encoder = encoder
        self._max_entries = max_entries
        self._max_text_chars = max_text_chars
        self._entries: OrderedDict[str, NDArray[np.float32]] = OrderedDict()
        self._lock = threading.Lock()
        #: Rows served from the cache, and distinct texts handed to the wrapped encoder.
        self.hits = 0
        self.misses = 0

    @property
    def dimension(self) -> int:
        """The wrapped encoder's vector length."""
        return self._encoder.dimension

    def __len__(self) -> int:
        return len(self._entries)

    def encode(self, texts: Sequence[str]) -> NDArray[np.float32]:
        """Like the wrapped encoder's ``encode``; rows of texts seen recently come from the cache."""
        import numpy as np

        if isinstance(texts, str):
            raise TypeError("encode() takes a sequence of texts, not a single string")
        out = np.empty((len(texts), self.dimension), dtype=np.float32)
        missing: dict[str, list[int]] = {}
        with self._lock:
            for i, text in enumerate(texts):
                row = self._entries.get(text)
                if row is None:
                    missing.setdefault(text, []).append(i)
                else:
                    self._entries.move_to_end(text)
                    out[i] = row
            self.hits += len(texts) - sum(len(rows) for rows in missing.values())
            self.misses += len(missing)
        if not missing:
            return out
        fresh = self._encoder.encode(list(missing))
        with self._lock:
            for (text, rows), vector in zip(missing.items(), fresh, strict=True):
                out[rows] = vector
                if len(text) <= self._max_text_chars:
                    stored = vector.copy()
                    stored.flags.writeable = False
                    self._entries[text] = stored
                    self._entries.move_to_end(text)
            while len(self._entries) > self._max_entries:
                self._entries.popitem(last=False)
        return out
