"""The overhead benchmark runs end to end (tiny cells, no LiteLLM): it measures, it does not judge here."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_gateway_overhead_quick_run(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "gateway_overhead.py"), "--quick", "--skip-litellm",
         "--concurrency", "1,4", "--out-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=300, cwd=ROOT,
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    doc = json.loads((tmp_path / "gateway_overhead.quick.json").read_text())
    cells = doc["cells"]
    assert {c["target"] for c in cells} == {"direct", "switchboard"}
    assert all(c["loadgen"]["errors"] == 0 and c["loadgen"]["ok"] > 0 for c in cells)
    assert all(c["server"]["cpu_ms_per_request"] is not None for c in cells)
    assert any(c["mode"] == "stream" for c in cells) and any(c["mode"] == "non-stream" for c in cells)
    # The interpreter's build moves CPU per request by about a tenth: every report names it.
    assert doc["meta"]["setup"]["interpreter"].startswith(f"CPython {sys.version.split()[0]}, ")


def test_the_reference_targets_forward_every_request(tmp_path: Path) -> None:
    """The byte relay, the callback forwarder, Switchboard's work in callbacks and the pass-through answer streams
    and non-streaming requests without an error, one at a time and several at once."""
    out = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "gateway_overhead.py"), "--quick", "--skip-litellm",
         "--relay", "--forwarder", "--callback", "--passthrough", "--concurrency", "1,4", "--delays", "0",
         "--out-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=300, cwd=ROOT,
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    cells = json.loads((tmp_path / "gateway_overhead.quick.json").read_text())["cells"]
    targets = {"direct", "relay", "forwarder", "callback", "passthrough", "switchboard"}
    assert {c["target"] for c in cells} == targets
    assert all(c["loadgen"]["errors"] == 0 and c["loadgen"]["ok"] > 0 for c in cells)
    assert {c["mode"] for c in cells if c["target"] == "forwarder"} == {"stream", "non-stream"}
    streams = [c for c in cells if c["mode"] == "stream" and c["target"] in ("callback", "switchboard")]
    assert streams and all(c["loadgen"]["content_chunks"]["min"] == 20 for c in streams)
