"""Sentence encoders for semantic routing: the :class:`Encoder` protocol, the local MiniLM model, the static
encoder distilled from it and an LRU cache in front of any encoder. Importing this package does not import
numpy; building an encoder does.

Usage::

    encoder = CachedEncoder(MiniLMEncoder(max_tokens=128), max_entries=4096)
    vectors = encoder.encode(["How do I reset my password?"])
"""

from switchboard.routing.embeddings.cache import CachedEncoder
from switchboard.routing.embeddings.encoder import Encoder
from switchboard.routing.embeddings.minilm import (
    MINILM_SHA256,
    EncoderLoadError,
    MiniLMEncoder,
    WeightsChecksumError,
    default_model_dir,
)
from switchboard.routing.embeddings.static import StaticEncoder

__all__ = [
    "MINILM_SHA256",
    "CachedEncoder",
    "Encoder",
    "EncoderLoadError",
    "MiniLMEncoder",
    "StaticEncoder",
    "WeightsChecksumError",
    "default_model_dir",
]
