"""What semantic routing needs from a sentence encoder, whichever model computes the vectors.

The local :class:`~switchboard.routing.embeddings.minilm.MiniLMEncoder` is one; a remote embeddings
deployment wrapped to this shape is another. Encoders are synchronous: the gateway runs them in a worker
thread, never on the event loop.

Usage::

    def route_vectors(encoder: Encoder, texts: Sequence[str]) -> NDArray[np.float32]:
        return encoder.encode(texts)  # (len(texts), encoder.dimension), rows of unit length
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    import numpy as np
    from numpy.typing import NDArray

__all__ = ["Encoder"]


@runtime_checkable
class Encoder(Protocol):
    """Turns texts into unit-length float32 vectors of a fixed dimension; safe to call from many threads."""

    @property
    def dimension(self) -> int:
        """The length of every vector."""
        ...

    def encode(self, texts: Sequence[str]) -> NDArray[np.float32]:
        """One L2-normalised row per text, shape ``(len(texts), dimension)``."""
        ...
