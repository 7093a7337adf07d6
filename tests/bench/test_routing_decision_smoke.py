"""The routing-decision benchmark runs end to end in quick mode (it measures; it does not judge here)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_routing_decision_quick_run() -> None:
    out = subprocess.run([sys.executable, str(ROOT / "bench" / "routing_decision.py"), "--quick"],
                         capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    assert "| short" in out.stdout and "| long (~4k tokens)" in out.stdout
    assert "| learned | long, one block |" in out.stdout and "Event loop: longest" in out.stdout
