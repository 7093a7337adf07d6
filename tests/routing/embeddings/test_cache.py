"""The LRU cache in front of an encoder: hits skip the encoder, memory stays bounded."""

from __future__ import annotations

import threading
from collections.abc import Sequence

import numpy as np
import pytest
from numpy.typing import NDArray

from switchboard.routing.embeddings import CachedEncoder, Encoder


class CountingEncoder:
    """A stand-in encoder: a text's vector is derived from its length; records what it was asked."""

    dimension = 4

    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    def encode(self, texts: Sequence[str]) -> NDArray[np.float32]:
        self.calls.append(list(texts))
        out = np.zeros((len(texts), self.dimension), dtype=np.float32)
        for i, text in enumerate(texts):
            out[i, len(text) % self.dimension] = 1.0
        return out


def test_hits_skip_the_encoder_and_return_the_same_rows() -> None:
    inner = CountingEncoder()
    cached = CachedEncoder(inner, max_entries=8)
    assert isinstance(cached, Encoder) and cached.dimension == 4
    first = cached.encode(["a", "bb", "a"])
    second = cached.encode(["bb", "ccc", "a"])
    assert inner.calls == [["a", "bb"], ["ccc"]]  # duplicates within a call are encoded once
    np.testing.assert_array_equal(second[[0, 2]], first[[1, 0]])
    assert (cached.hits, cached.misses) == (2, 3)  # rows served from the cache; texts encoded


def test_least_recently_used_entry_is_evicted() -> None:
    inner = CountingEncoder()
    cached = CachedEncoder(inner, max_entries=2)
    cached.encode(["a", "b"])
    cached.encode(["a"])  # refreshes "a"
    cached.encode(["c"])  # evicts "b"
    assert len(cached) == 2
    cached.encode(["a", "b"])
    assert inner.calls[-1] == ["b"]


def test_long_texts_are_encoded_but_not_stored() -> None:
    inner = CountingEncoder()
    cached = CachedEncoder(inner, max_text_chars=10)
    cached.encode(["x" * 11])
    cached.encode(["x" * 11])
    assert len(inner.calls) == 2 and len(cached) == 0


def test_returned_rows_are_the_callers_to_modify() -> None:
    cached = CachedEncoder(CountingEncoder())
    row = cached.encode(["a"])
    row[:] = 7.0
    assert cached.encode(["a"])[0].max() == 1.0


def test_concurrent_use_keeps_counts_and_bound() -> None:
    cached = CachedEncoder(CountingEncoder(), max_entries=5)

    def work(offset: int) -> None:
        for i in range(200):
            cached.encode([f"text {(i + offset) % 9}"])

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert cached.hits + cached.misses == 800
    assert len(cached) <= 5


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="max_entries"):
        CachedEncoder(CountingEncoder(), max_entries=0)
    with pytest.raises(TypeError, match="sequence of texts"):
        CachedEncoder(CountingEncoder()).encode("abc")
