"""The static encoder distilled from MiniLM: its table is what the docs say, its vectors are weighted means of
it, and the cached table is found, checked and written whole.

The whole table takes half a minute to build; these tests build the rows of the tokens they use (the other
rows stay zero), with the same code (``MiniLMEncoder.token_vectors``)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from numpy.typing import NDArray
from tokenizers import Tokenizer

from switchboard.routing.embeddings import EncoderLoadError, MiniLMEncoder, default_model_dir
from switchboard.routing.embeddings import static as static_module
from switchboard.routing.embeddings.static import StaticEncoder, build_table, default_cache_dir, table_path

TEXTS = [
    "How do I reset my password?",
    "I forgot my login credentials",
    "My card payment was declined at the shop",
    "Why was my card refused when I paid?",
    "What is the weather like in Paris tomorrow?",
    "Will it rain in Paris tomorrow?",
]


def _tokenizer() -> Tokenizer:
    tok = Tokenizer.from_file(str(default_model_dir() / "tokenizer.json"))
    tok.no_truncation()
    tok.no_padding()
    return tok


def _partial_table(encoder: MiniLMEncoder, texts: list[str]) -> NDArray[np.float32]:
    ids = sorted({i for e in _tokenizer().encode_batch([t.lower() for t in texts], add_special_tokens=False)
                  for i in e.ids})
    table = np.zeros((encoder.vocab_size, 384), dtype=np.float32)
    table[ids] = encoder.token_vectors(ids)
    return table


@pytest.fixture(scope="module")
def table(encoder: MiniLMEncoder) -> NDArray[np.float32]:
    return _partial_table(encoder, [*TEXTS, "hello", "zebra"])


@pytest.fixture(scope="module")
def static(table: NDArray[np.float32]) -> StaticEncoder:
    return StaticEncoder(table, _tokenizer())


def test_a_row_is_minilm_on_the_token_alone(encoder: MiniLMEncoder) -> None:
    tok = _tokenizer()
    ids = [tok.token_to_id(w) for w in ("hello", "zebra", "password")]
    rows = encoder.token_vectors(ids, batch_size=2)  # two batches
    np.testing.assert_allclose(rows, encoder.encode(["hello", "zebra", "password"]), atol=1e-5)
    assert rows.dtype == np.float32


def test_a_sentence_is_the_rank_weighted_mean_of_its_tokens(static: StaticEncoder,
                                                            table: NDArray[np.float32]) -> None:
    tok = _tokenizer()
    the = tok.token_to_id("the")
    for text in TEXTS:
        ids = tok.encode(text.lower(), add_special_tokens=False).ids
        weights = np.array([math.log(max(i - the, 0) + 2) for i in ids])
        expected = (weights[:, None] * table[ids].astype(np.float64)).sum(axis=0)
        expected /= np.linalg.norm(expected)
        np.testing.assert_allclose(static.encode([text])[0], expected, atol=1e-5)
    # Case does not matter (the model is uncased).
    np.testing.assert_allclose(static.encode(["HELLO"]), static.encode(["hello"]), atol=1e-6)


def test_rows_are_unit_float32_and_an_empty_text_resembles_nothing(static: StaticEncoder) -> None:
    vectors = static.encode([*TEXTS, ""])
    assert vectors.shape == (len(TEXTS) + 1, 384) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors[:-1], axis=1), 1.0, atol=1e-5)
    assert not vectors[-1].any()
    assert static.encode([]).shape == (0, 384)
    with pytest.raises(TypeError):
        static.encode("one string")  # type: ignore[arg-type]


def test_paraphrases_are_closer_than_unrelated_sentences(static: StaticEncoder) -> None:
    v = static.encode(TEXTS)
    sims = v @ v.T
    for a in (0, 2, 4):
        b = a + 1
        others = [sims[a, j] for j in range(len(TEXTS)) if j not in (a, b)]
        assert sims[a, b] > max(others), (TEXTS[a], sims[a])


def test_a_table_of_the_wrong_shape_is_refused() -> None:
    with pytest.raises(EncoderLoadError, match="one row per token id"):
        StaticEncoder(np.zeros((10, 384), dtype=np.float32), _tokenizer())


def test_the_cached_table_is_loaded_not_rebuilt(tmp_path: Path, table: NDArray[np.float32],
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    path = table_path(tmp_path)
    np.save(path, table.astype(np.float16))

    def no_build(*args: object, **kwargs: object) -> None:
        raise AssertionError("the cached table should have been used")

    monkeypatch.setattr(static_module, "build_table", no_build)
    loaded = StaticEncoder.from_minilm(tmp_path)
    np.testing.assert_allclose(loaded.encode(TEXTS), StaticEncoder(table, _tokenizer()).encode(TEXTS), atol=2e-3)


@pytest.mark.parametrize("content", [b"not a numpy file", None], ids=["unreadable", "wrong-shape"])
def test_an_unreadable_or_foreign_table_is_built_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                       table: NDArray[np.float32], content: bytes | None) -> None:
    path = table_path(tmp_path)
    if content is None:
        np.save(path, np.zeros((5, 384), dtype=np.float16))
    else:
        path.write_bytes(content)
    built: list[Path] = []

    def build(at: Path, **kwargs: object) -> NDArray[np.float32]:
        built.append(at)
        return table

    monkeypatch.setattr(static_module, "build_table", build)
    StaticEncoder.from_minilm(tmp_path)
    assert built == [path]


def test_building_writes_the_whole_table_or_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    vocab = _tokenizer().get_vocab_size()
    rows = np.random.default_rng(0).standard_normal((vocab, 384)).astype(np.float32)
    monkeypatch.setattr(MiniLMEncoder, "token_vectors", lambda self, **kw: rows)
    path = table_path(tmp_path / "new")
    np.testing.assert_array_equal(build_table(path), rows)
    stored = np.load(path)
    assert stored.dtype == np.float16 and stored.shape == (vocab, 384)
    np.testing.assert_allclose(stored, rows, atol=2e-2)
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]  # no temporary file left

    def broken(self: MiniLMEncoder, **kw: object) -> NDArray[np.float32]:
        raise OSError("disk full")

    monkeypatch.setattr(MiniLMEncoder, "token_vectors", broken)
    with pytest.raises(OSError, match="disk full"):
        build_table(table_path(tmp_path / "other"))
    assert not table_path(tmp_path / "other").exists()


def test_the_cache_directory_follows_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("SWITCHBOARD_CACHE_DIR", str(tmp_path / "own"))
    assert default_cache_dir() == tmp_path / "own"
    monkeypatch.delenv("SWITCHBOARD_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "xdg" / "switchboard"
    assert table_path().parent == tmp_path / "xdg" / "switchboard"
    assert table_path().name.startswith("minilm-static-v1-")


def test_workers_starting_together_build_the_table_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                        table: NDArray[np.float32]) -> None:
    import threading

    builds: list[Path] = []
    started = threading.Barrier(3)

    def build(at: Path, **kwargs: object) -> NDArray[np.float32]:
        builds.append(at)
        np.save(at, table.astype(np.float16))
        return table

    monkeypatch.setattr(static_module, "build_table", build)

    def worker(out: list[StaticEncoder]) -> None:
        started.wait()
        out.append(StaticEncoder.from_minilm(tmp_path))

    got: list[StaticEncoder] = []
    threads = [threading.Thread(target=worker, args=(got,)) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(got) == 3 and builds == [table_path(tmp_path)]
