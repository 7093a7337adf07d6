"""A fast sentence encoder distilled from all-MiniLM-L6-v2: static token vectors, averaged.

Each vocabulary token gets, once, the vector MiniLM gives the one-token text ``[CLS] token [SEP]``; a
sentence is then the weighted mean of its tokens' vectors, L2-normalised. Rare tokens weigh more than
common ones (``log(rank + 2)``, the rank read off the vocabulary, whose words come in order of frequency),
which is what lets "auto top-up" outweigh "how do I". Encoding is a tokenizer call and one small matrix
product: well under a millisecond for 1,000 characters, against 10–55 ms for a MiniLM forward pass. The
price is accuracy — word order and context are gone (see ``docs/routing.md``) — which semantic routes can
buy back by confirming close calls with the full model (``semantic.confirm_margin``).

The table (30,522 × 384) is built from the MiniLM weights the first time it is needed — about half a
minute on one core — and kept as ``minilm-static-v1-<weights digest>.npy`` (float16, 23 MB) in
``SWITCHBOARD_CACHE_DIR``, else ``$XDG_CACHE_HOME/switchboard``, else ``~/.cache/switchboard``; ``switchboard
router build-encoder`` builds it ahead of time.

Usage::

    encoder = StaticEncoder.from_minilm()  # loads the cached table, or builds and caches it
    vectors = encoder.encode(["How do I reset my password?"])  # (1, 384) float32, unit rows
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from switchboard.routing.embeddings.minilm import MINILM_SHA256, EncoderLoadError, MiniLMEncoder, default_model_dir

if TYPE_CHECKING:
    import numpy as np
    from numpy.typing import NDArray
    from tokenizers import Tokenizer

    Array = NDArray[np.float32]

__all__ = ["StaticEncoder", "build_table", "default_cache_dir", "table_path"]

#: Bumped whenever the way the table is computed changes: older files are then left alone, not misread.
_TABLE_VERSION = 1


def default_cache_dir() -> Path:
    """Where built tables are kept: ``SWITCHBOARD_CACHE_DIR``, else ``$XDG_CACHE_HOME/switchboard``, else
    ``~/.cache/switchboard``."""
    if own := os.environ.get("SWITCHBOARD_CACHE_DIR"):
        return Path(own)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "switchboard"


def table_path(cache_dir: Path | str | None = None) -> Path:
    """The file of the table for the MiniLM weights whose sha256 is checked at load."""
    directory = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    return directory / f"minilm-static-v{_TABLE_VERSION}-{MINILM_SHA256[:16]}.npy"


class StaticEncoder:
    """Sentences as weighted means of static token vectors (see the module's text); thread-safe, read-only
    after construction.

    ``table`` has one row per token id; ``tokenizer`` is MiniLM's (WordPiece). Special tokens ([CLS],
    [SEP], [PAD], [UNK]) are left out of the mean. A text without a single other token gets the zero
    vector, which resembles nothing (cosine 0).

    Usage::

        encoder = StaticEncoder.from_minilm()
        encoder.encode(["reset my password", "I forgot my login"])
    """

    def __init__(self, table: Array, tokenizer: Tokenizer, *, lowercase: bool = True) -> None:
        import numpy as np

        if table.ndim != 2 or table.shape[0] != tokenizer.get_vocab_size():
            raise EncoderLoadError(f"a static table needs one row per token id ({tokenizer.get_vocab_size()}), "
                                   f"got shape {table.shape}")
        self._table = np.ascontiguousarray(table, dtype=np.float32)
        self._table.flags.writeable = False
        first_word = tokenizer.token_to_id("the") or 0
        ranks = np.maximum(np.arange(table.shape[0]) - first_word, 0)
        weights = np.log(ranks + 2.0)
        for special in ("[CLS]", "[SEP]", "[PAD]", "[UNK]", "[MASK]"):
            if (sid := tokenizer.token_to_id(special)) is not None:
                weights[sid] = 0.0
        self._weights = weights.astype(np.float32)
        tokenizer.no_padding()
        tokenizer.no_truncation()
        self._tokenizer = tokenizer
        self._lowercase = lowercase

    @classmethod
    def from_minilm(cls, cache_dir: Path | str | None = None, model_dir: Path | str | None = None, *,
                    progress: Callable[[int, int], None] | None = None) -> StaticEncoder:
        """The encoder of the cached table, built from the MiniLM weights (and cached) when there is none."""
        from tokenizers import Tokenizer

        directory = Path(model_dir) if model_dir is not None else default_model_dir()
        path = table_path(cache_dir)
        tokenizer = Tokenizer.from_file(str(directory / "tokenizer.json"))
        table = _readable(path, tokenizer.get_vocab_size())
        if table is None or table.shape != (tokenizer.get_vocab_size(), 384):
            with _building(path):  # the workers of one server build it once: the others wait, then read it
                table = _readable(path, tokenizer.get_vocab_size())
                if table is None:
                    import logging

                    logging.getLogger("switchboard").warning(
                        "building the minilm-static table %s from the MiniLM weights: once, about half a minute "
                        "(`switchboard router build-encoder` does it ahead of time)", path)
                    table = build_table(path, model_dir=directory, progress=progress)
        return cls(table, tokenizer)

    @property
    def dimension(self) -> int:
        """The length of every vector (384)."""
        return int(self._table.shape[1])

    def encode(self, texts: Sequence[str]) -> Array:
        """One L2-normalised float32 row per text, shape ``(len(texts), 384)``."""
        import numpy as np

        if isinstance(texts, str):
            raise TypeError("encode() takes a sequence of texts, not a single string")
        prepared = [t.lower() for t in texts] if self._lowercase else list(texts)
        out = np.zeros((len(prepared), self.dimension), dtype=np.float32)
        if not prepared:
            return out
        table, weights = self._table, self._weights
        for row, encoding in enumerate(self._tokenizer.encode_batch(prepared, add_special_tokens=False)):
            ids = np.asarray(encoding.ids, dtype=np.int64)
            if ids.size:
                out[row] = weights[ids] @ table[ids]
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        out /= np.where(norms == 0, 1.0, norms)
        return out


def _readable(path: Path, vocab: int) -> Array | None:
    """The table stored at ``path``, or ``None`` when there is none, or none of the right shape, or it cannot
    be read (it is then built again)."""
    import numpy as np

    try:
        table = np.load(path, allow_pickle=False)
    except (OSError, ValueError):
        return None
    return table if table.shape == (vocab, 384) else None


@contextlib.contextmanager
def _building(path: Path) -> Iterator[None]:
    """Hold an exclusive lock next to ``path`` (a no-op where ``fcntl`` is missing)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        yield
        return
    with open(path.with_suffix(".lock"), "a+b") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def build_table(path: Path, model_dir: Path | str | None = None, *,
                progress: Callable[[int, int], None] | None = None) -> Array:
    """Compute the table from the MiniLM weights (checked) and store it at ``path`` (float16, written to a
    temporary file first, so a reader never sees half a table); returns it as float32."""
    import numpy as np

    vectors = MiniLMEncoder(model_dir).token_vectors(progress=progress)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name, suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            np.save(fh, vectors.astype(np.float16), allow_pickle=False)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return vectors
