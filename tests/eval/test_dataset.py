"""Loading outcome files: the RouterBench CSV shape and the JSONL format for logged traffic."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from switchboard.eval.dataset import DatasetError, expand_paths, load_outcomes

MODELS = ["big", "small"]


def write_routerbench_csv(path: Path, rows: list[tuple[str, str, str, str, float, float]]) -> None:
    """rows: (sample_id, prompt, task, big correctness ('' = empty), small correctness, cost scale)."""
    header = ["", "sample_id", "prompt", "eval_name", *MODELS, *(f"{m}|model_response" for m in MODELS),
              *(f"{m}|total_cost" for m in MODELS), "oracle_model_to_route_to"]
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(header)
        for i, (sid, prompt, task, big, small, scale) in enumerate(rows):
            w.writerow([i, sid, repr([prompt]), task, big, small, "['x']", "['y']", 0.01 * scale, 0.001 * scale,
                        "small"])


def test_routerbench_csv(tmp_path: Path) -> None:
    path = tmp_path / "t_train.csv"
    write_routerbench_csv(path, [
        ("t.dev.0", "What is 2+2?\nAnswer:", "arith", "1.0", 0.0, 1.0),
        ("t.dev.1", "It's a 'quoted' prompt", "arith", "", 1.0, 1.0),  # empty cell: dropped
        ("t.dev.2", "Name a colour.", "chat", "0.0", 1.0, 2.0),
    ])
    data = load_outcomes([path])
    assert data.models == ("big", "small")
    assert data.prompts == ("What is 2+2?\nAnswer:", "Name a colour.")
    assert data.tasks == ("arith", "chat")
    assert data.groups == ("t.dev.0", "t.dev.2")
    np.testing.assert_allclose(data.scores, [[1.0, 0.0], [0.0, 1.0]])
    np.testing.assert_allclose(data.costs, [[0.01, 0.001], [0.02, 0.002]])


def test_jsonl_with_a_missing_model(tmp_path: Path) -> None:
    path = tmp_path / "mine.jsonl"
    lines = [
        {"prompt": "hello", "task": "chat", "outcomes": {"a": {"score": 1, "cost": 0.001}, "b": {"score": 0.5,
                                                                                               "cost": 0.01}}},
        {"prompt": "prove it", "outcomes": {"b": {"score": 0.25, "cost": 0.02}}},
    ]
    path.write_text("\n".join(json.dumps(x) for x in lines) + "\n\n", encoding="utf-8")
    data = load_outcomes([path])
    assert data.models == ("a", "b") and data.tasks == ("chat", "")
    assert np.isnan(data.scores[1, 0])
    assert len(data.complete()) == 1


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("not json\n", "not JSON"),
        ('{"prompt": "x"}\n', "outcomes"),
        ('{"prompt": "x", "outcomes": {"a": {"score": 2, "cost": 0}}}\n', "score of a"),
        ('{"prompt": "x", "outcomes": {"a": {"score": 1, "cost": -1}}}\n', "cost of a"),
    ],
)
def test_bad_jsonl_names_the_line(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(DatasetError, match=message) as info:
        load_outcomes([path])
    assert "bad.jsonl:1" in str(info.value)


def test_unknown_format_and_missing_files(tmp_path: Path) -> None:
    (tmp_path / "x.txt").write_text("hi", encoding="utf-8")
    with pytest.raises(DatasetError, match="unknown format"):
        load_outcomes([tmp_path / "x.txt"])
    with pytest.raises(DatasetError, match="no such file"):
        expand_paths([str(tmp_path / "missing.csv")])
    with pytest.raises(DatasetError, match="no file matches"):
        expand_paths([str(tmp_path / "*.csv")])


def test_csv_without_model_columns_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "plain.csv"
    path.write_text("a,b\n1,2\n", encoding="utf-8")
    with pytest.raises(DatasetError, match="not a RouterBench CSV"):
        load_outcomes([path])
