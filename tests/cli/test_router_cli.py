"""``switchboard router train`` and ``switchboard router eval`` on synthetic temp data; ``build-encoder``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from switchboard.cli.main import main
from tests.routing.learned.synthetic import write_synthetic


def test_train_then_eval_with_plot_and_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    train_file = write_synthetic(tmp_path / "train.jsonl", 48)
    test_file = write_synthetic(tmp_path / "test.jsonl", 20)
    out = tmp_path / "model"
    assert main(["router", "train", "--data", str(train_file), "--out", str(out), "--seed", "1"]) == 0
    captured = capsys.readouterr()
    assert "(chosen)" in captured.out and "wrote" in captured.out
    assert "final fit" in captured.err  # the progress bar goes to stderr
    assert (out / "model.json").is_file()

    plot = tmp_path / "curve.png"
    code = main(["router", "eval", "--data", str(test_file), "--train", str(train_file), "--model", str(out),
                 "--plot", str(plot)])
    text = capsys.readouterr().out
    assert code == 0
    for name in ("always-cheapest", "always-strongest", "random", "zero router", "per-task best", "learned",
                 "oracle"):
        assert name in text
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    assert main(["router", "eval", "--data", str(tmp_path / "*.jsonl"), "--model", str(out), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    learned = next(r for r in doc["routers"] if r["name"] == "learned")
    zero = next(r for r in doc["routers"] if r["name"] == "zero router")
    assert learned["aiq"] == pytest.approx(0.875) and zero["aiq"] < 0.8  # 0.875: as good as the oracle
    assert doc["pair"] == {"strong": "big", "weak": "small"}


@pytest.mark.parametrize(
    "argv",
    [
        ["router", "eval", "--data", "/nonexistent/test.csv"],
        ["router", "train", "--data", "/nonexistent/*.csv", "--out", "x"],
    ],
)
def test_missing_files_are_one_line_errors(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("switchboard router") and err.count("\n") == 1 and "Traceback" not in err


def test_bad_format_and_bad_model_dir(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text("{oops\n", encoding="utf-8")
    assert main(["router", "eval", "--data", str(bad)]) == 2
    assert "bad.jsonl:1" in capsys.readouterr().err
    good = write_synthetic(tmp_path / "good.jsonl", 12)
    assert main(["router", "eval", "--data", str(good), "--model", str(tmp_path)]) == 2
    assert "not a router model directory" in capsys.readouterr().err


def test_router_without_action_prints_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["router"]) == 2
    assert "train" in capsys.readouterr().err


def test_build_encoder_builds_the_static_table_once(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    import numpy as np

    from switchboard.routing.embeddings import MiniLMEncoder
    from switchboard.routing.embeddings.static import table_path

    builds: list[int] = []

    def vectors(self: MiniLMEncoder, *, progress: object = None) -> object:  # the real pass takes half a minute
        builds.append(1)
        if callable(progress):
            progress(self.vocab_size, self.vocab_size)
        return np.ones((self.vocab_size, 384), dtype=np.float32)

    monkeypatch.setattr(MiniLMEncoder, "token_vectors", vectors)
    assert main(["router", "build-encoder", "--cache-dir", str(tmp_path)]) == 0
    out, err = capsys.readouterr()
    assert f"wrote {table_path(tmp_path)}" in out and "30522/30522 tokens" in err
    assert np.load(table_path(tmp_path)).shape == (30522, 384)
    assert main(["router", "build-encoder", "--cache-dir", str(tmp_path)]) == 0
    assert "already built" in capsys.readouterr().out and builds == [1]
    assert main(["router", "build-encoder", "--cache-dir", str(tmp_path), "--force", "--quiet"]) == 0
    assert builds == [1, 1]
    (tmp_path / "file").write_text("")
    assert main(["router", "build-encoder", "--cache-dir", str(tmp_path / "file")]) == 2
    assert "switchboard router build-encoder:" in capsys.readouterr().err
