"""The recording benchmark runs end to end in quick mode (it measures; it does not judge here)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_recording_quick_run() -> None:
    out = subprocess.run([sys.executable, str(ROOT / "bench" / "recording.py"), "--quick"],
                         capture_output=True, text=True, timeout=180, cwd=ROOT / "bench")
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    assert "| off |" in out.stdout and "| sqlite |" in out.stdout
