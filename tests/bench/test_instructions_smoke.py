"""The instruction-count benchmark: its arithmetic, and a quick run end to end under valgrind."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))

from instructions import Count, change, dump_total, report  # noqa: E402


def test_the_total_is_read_from_the_dump_summary() -> None:
    dump = (b"version: 1\ncreator: callgrind-3.19.0\npid: 12\ncmd: switchboard\npart: 1\n\nevents: Ir\n\n"
            b"summary: 1385521802\n")
    assert dump_total(dump) == 1385521802
    assert dump_total(b"events: Ir\nfl=x\n\ntotals: 42\n") == 42
    with pytest.raises(ValueError, match="no summary"):
        dump_total(b"events: Ir\n")


def test_costs_are_per_request_and_relative_to_the_first_none() -> None:
    sqlite, again = Count("sqlite", 770_000_000, 1000, 0), Count("none", 693_000_000, 1000, 0)
    none = Count("none", 700_000_000, 1000, 0)
    assert sqlite.per_request == 770_000 and round(change(sqlite, none), 6) == 10.0
    table = report([none, sqlite, again], requests=1000, warmup=100)
    assert "| none | 700,000 | – | 1000 | 0 |" in table
    assert "| sqlite | 770,000 | +10.0 % | 1000 | 0 |" in table
    assert "| none (again) | 693,000 | -1.0 % | 1000 | 0 |" in table


@pytest.mark.skipif(shutil.which("valgrind") is None, reason="valgrind is not installed")
def test_instructions_quick_run() -> None:
    out = subprocess.run([sys.executable, str(ROOT / "bench" / "instructions.py"), "--quick"],
                         capture_output=True, text=True, timeout=300, cwd=ROOT / "bench")
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    rows = {line.split("|")[1].strip(): line for line in out.stdout.splitlines() if line.startswith("| ")}
    assert set(rows) >= {"none", "sqlite"}
    assert int(rows["none"].split("|")[2].strip().replace(",", "")) > 100_000  # the gateway's work was counted
