"""``switchboard sim`` as a process: it announces its URL and models, serves, and stops on SIGTERM."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import httpx2
import pytest

from switchboard.sim import main


def test_serves_until_sigterm(tmp_path: Path) -> None:
    fleet = tmp_path / "fleet.yaml"
    fleet.write_text("models:\n  - {name: cli-model, format: gemini, aliases: [c]}\n")
    argv = ["--port", "0", "--fleet", str(fleet)]
    code = f"import sys; from switchboard.sim import main; sys.exit(main({argv!r}))"
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        assert first.startswith("switchboard sim serving on http://127.0.0.1:")
        url = first.rsplit(" ", 1)[1].strip()
        lines = [proc.stdout.readline() for _ in range(5)]
        assert "cli-model" in lines[-1]
        assert "gemini" in lines[-1]
        assert "aliases: c" in lines[-1]
        r = httpx2.get(f"{url}/v1beta/models", headers={"x-goog-api-key": "k"})
        assert r.json()["models"][0]["name"] == "models/cli-model"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


def test_bad_fleet_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("models: [{name: x, ttft_ms: fast}]")
    assert main(["--fleet", str(path)]) == 2
    assert "models[0].ttft_ms: must be a number >= 0" in capsys.readouterr().err
