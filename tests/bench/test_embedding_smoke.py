"""The encoder benchmark runs end to end in quick mode: it measures, it does not judge here."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_embedding_bench_quick_run(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "embedding.py"), "--quick", "--out-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=120, cwd=ROOT,
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    doc = json.loads((tmp_path / "embedding.quick.json").read_text())
    cells = doc["cells"]
    assert {c["path"] for c in cells} == {"tokenize only (baseline)", "MiniLM encode", "cache hit"}
    assert {(c["text"], c["max_tokens"]) for c in cells} == {(t, m) for t in ("short", "long") for m in (256, 128)}
    assert all(c["tokens_read"] <= c["max_tokens"] and c["p50_ms"] > 0 for c in cells)
    assert "p50 / baseline" in (tmp_path / "embedding.quick.md").read_text()
