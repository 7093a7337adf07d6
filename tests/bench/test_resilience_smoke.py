"""The resilience benchmark runs end to end (small phases, no LiteLLM): it reports, it does not judge here."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_resilience_quick_run(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "resilience.py"), "--quick", "--skip-litellm",
         "--out-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=300, cwd=ROOT,
    )
    # 0: every cell met the bar, 1: one did not — both are a finished run; 2 and up are not.
    assert out.returncode in (0, 1), out.stdout[-3000:] + out.stderr[-3000:]
    doc = json.loads((tmp_path / "resilience.quick.json").read_text())
    cells = doc["cells"]
    assert [(c["mode"], c["phase"]) for c in cells] == [
        (mode, phase) for mode in ("non-stream", "stream") for phase in ("healthy", "flaky 30 %", "flaky 100 %")
    ]
    assert {c["target"] for c in cells} == {"switchboard"}
    for c in cells:
        assert c["loadgen"]["attempted"] > 0 and c["loadgen"]["ok"] > 0
        assert 0 <= c["success_rate"] <= 1 and c["verdict"] in ("PASS", "FAIL")
        assert set(c["added_vs_healthy"]) == {"latency_p50_ms", "latency_p99_ms", "ttft_p50_ms", "ttft_p99_ms"}
        assert c["records"]["recorded"] > 0  # Switchboard's own records of the phase
    healthy = [c for c in cells if c["phase"] == "healthy"]
    assert all(c["loadgen"]["errors"] == 0 for c in healthy)
    assert "switchboard" in doc["meta"]["configs"] and "litellm" not in doc["meta"]["configs"]
    report = (tmp_path / "resilience.quick.md").read_text()
    assert "Client-visible success" in report and "What Switchboard's request records show" in report
