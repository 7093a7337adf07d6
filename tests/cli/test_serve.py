"""``switchboard serve`` and ``check-config`` as a user runs them: real processes, real sockets."""

from __future__ import annotations

import json
import os
import re
import resource
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
import yaml

from switchboard.cli import serve as serve_cli
from switchboard.config.load import parse_config
from switchboard.sim.fleet import DEFAULT_FLEET, gateway_config_for_fleet
from tests.e2e.servers import SimThread

EXE = [sys.executable, "-m", "switchboard.cli.main"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def clean_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.endswith("_API_KEY") and not k.startswith("SWITCHBOARD_")}
    env["PYTHONUNBUFFERED"] = "1"
    return env


class Served:
    def __init__(self, args: list[str], cwd: Path, env: dict[str, str],
                 preexec: Callable[[], None] | None = None) -> None:
        self.port = free_port()
        self.proc = subprocess.Popen([*EXE, "serve", "--port", str(self.port), *args], cwd=cwd, env=env,
                                     stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
                                     preexec_fn=preexec)
        self.banner: list[str] = []
        assert self.proc.stderr is not None
        try:
            for line in self.proc.stderr:  # the server says when it is up: no polling, no sleeping
                self.banner.append(line.rstrip())
                if "Switchboard worker" in line and self._all_started(line):
                    break
            else:
                raise AssertionError("gateway exited early:\n" + "\n".join(self.banner))
        except BaseException:  # a failed start leaves no process behind for later tests to trip over
            self.proc.kill()
            self.proc.wait(30)
            self.proc.stderr.close()
            raise
        self.url = f"http://127.0.0.1:{self.port}"

    _started = 0

    def _all_started(self, line: str) -> bool:
        self._started += len(re.findall(r"Switchboard worker \d+ ready", line))
        workers = 2 if "--workers" in " ".join(self.proc.args) else 1  # type: ignore[arg-type]
        return self._started >= workers

    def stop(self) -> int:
        """SIGTERM, then the exit status (0 after a graceful shutdown)."""
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(30)
        finally:
            if self.proc.stderr:
                self.proc.stderr.close()


def raw_exchange(port: int, request: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send ``request`` as it is and read the answer up to the server's close: status, headers, body."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(request)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v for k, _, v in (line.partition(": ") for line in lines[1:])}
    assert int(headers["content-length"]) == len(body)
    return int(lines[0].split()[1]), headers, body


@pytest.fixture
def sim() -> Iterator[SimThread]:
    s = SimThread(DEFAULT_FLEET)
    yield s
    s.close()


def _few_open_files() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (256, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))


def test_serve_with_no_configuration_runs_the_simulated_fleet(tmp_path: Path) -> None:
    served = Served([], tmp_path, clean_env(tmp_path), preexec=_few_open_files)
    try:
        limits = Path(f"/proc/{served.proc.pid}/limits").read_text()
        soft, hard = re.search(r"Max open files\s+(\d+)\s+(\S+)", limits).groups()  # type: ignore[union-attr]
        assert int(soft) > 256 and (hard == "unlimited" or int(soft) == min(int(hard), 2**20))
        text = "\n".join(served.banner)
        assert "SIMULATED FLEET" in text and "OPENAI_API_KEY" in text
        client = openai.OpenAI(base_url=f"{served.url}/v1", api_key="x", max_retries=0)
        resp = client.chat.completions.create(model="fast", messages=[{"role": "user", "content": "hi"}])
        assert resp.choices[0].message.content
        client.close()
        # Requests the HTTP server refuses before the app sees them are still answered in the client's dialect.
        status, headers, body = raw_exchange(served.port, b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\n"
                                                          b"content-length: nope\r\n\r\n")
        assert status == 400 and headers["x-request-id"].startswith("req_")
        assert json.loads(body)["error"]["type"] == "invalid_request_error"
        status, headers, body = raw_exchange(served.port, b"POST /v1/messages HTTP/1.1\r\nhost: x\r\nx-big: "
                                                          + b"a" * 70_000 + b"\r\n\r\n")
        assert status == 431 and headers["x-request-id"].startswith("req_")
        assert json.loads(body) == {"type": "error", "error": {"type": "invalid_request_error",
                                                              "message": "The request's headers exceed 64 KiB."}}
    finally:
        assert served.stop() == 0
    assert (tmp_path / "switchboard.db").exists()
    out = subprocess.run([*EXE, "logs", "--db", str(tmp_path / "switchboard.db"), "--json"], capture_output=True,
                         text=True, check=True)
    assert '"public_model":"sim-gpt-small"' in out.stdout


def test_serve_from_file_with_two_workers(tmp_path: Path, sim: SimThread) -> None:
    cfg = gateway_config_for_fleet(DEFAULT_FLEET, sim.base_url)
    cfg["records"] = {"path": str(tmp_path / "rec.db")}
    (tmp_path / "switchboard.yaml").write_text(yaml.safe_dump(cfg))
    served = Served(["--workers", "2"], tmp_path, clean_env(tmp_path))
    try:
        assert any("switchboard.yaml" in line for line in served.banner)
        client = openai.OpenAI(base_url=f"{served.url}/v1", api_key="x", max_retries=0)
        for _ in range(6):
            stream = client.chat.completions.create(model="claude", messages=[{"role": "user", "content": "hi"}],
                                                    stream=True, extra_headers={"x-sim-reply": "two words"})
            assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == "two words"
        client.close()
        # Either worker answers /metrics for both: each shares its counts within a second.
        deadline = time.monotonic() + 10
        while True:
            with urllib.request.urlopen(f"{served.url}/metrics", timeout=10) as resp:
                text = resp.read().decode()
            counts = [float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                      if line.startswith("switchboard_requests_total{") and 'model="sim-claude"' in line]
            workers = [line for line in text.splitlines() if line.startswith("switchboard_metrics_workers ")]
            if (sum(counts) == 6 and workers == ["switchboard_metrics_workers 2"]) or time.monotonic() > deadline:
                break
        assert sum(counts) == 6 and workers == ["switchboard_metrics_workers 2"]
    finally:
        assert served.stop() == 0


def test_idle_client_connections_close_after_the_configured_keep_alive(tmp_path: Path, sim: SimThread) -> None:
    """An idle client connection is closed by the gateway once ``server.keep_alive_timeout`` has passed."""
    cfg = gateway_config_for_fleet(DEFAULT_FLEET, sim.base_url)
    cfg["records"] = {"enabled": False}
    cfg["server"] = {"keep_alive_timeout": 0.5}
    (tmp_path / "switchboard.yaml").write_text(yaml.safe_dump(cfg))
    served = Served([], tmp_path, clean_env(tmp_path))
    try:
        with socket.create_connection(("127.0.0.1", served.port), timeout=30) as sock:
            sock.sendall(b"GET /health/live HTTP/1.1\r\nhost: x\r\n\r\n")
            data = b""
            while chunk := sock.recv(65536):  # the answer, then the gateway's close once the connection idles
                data += chunk
        assert data.startswith(b"HTTP/1.1 200 OK\r\n") and data.endswith(b'{"status":"live"}')
    finally:
        assert served.stop() == 0


def test_a_worker_serves_with_the_configured_server_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[str, Any] = {}

    async def fake_serve(app: Any, **settings: Any) -> None:
        seen.update(settings)

    monkeypatch.setattr("switchboard.server.serve", fake_serve)
    cfg = gateway_config_for_fleet(DEFAULT_FLEET, "http://127.0.0.1:9/v1")
    cfg["records"] = {"enabled": False}
    cfg["server"] = {"keep_alive_timeout": 12.5, "max_body_bytes": 4096, "drain_timeout": 3}
    with socket.socket() as sock:
        assert serve_cli._worker(parse_config(cfg, env={}), sock) == 0
    assert (seen["keep_alive"], seen["max_body"], seen["drain_timeout"]) == (12.5, 4096, 3)
    assert seen["rejection"].__name__ == "render_rejection"


def test_serve_from_environment_keys(tmp_path: Path, sim: SimThread) -> None:
    env = clean_env(tmp_path)
    env["SWITCHBOARD_OPENAI_COMPATIBLE_URL"] = f"{sim.base_url}/v1"
    env["SWITCHBOARD_OPENAI_COMPATIBLE_MODELS"] = "sim-gpt-large"
    env["SWITCHBOARD_OPENAI_COMPATIBLE_KEY"] = "local-key"
    served = Served([], tmp_path, env)
    try:
        assert any("environment" in line for line in served.banner)
        client = openai.OpenAI(base_url=f"{served.url}/v1", api_key="x", max_retries=0)
        assert [m.id for m in client.models.list()] == ["sim-gpt-large"]
        assert client.chat.completions.create(model="sim-gpt-large", messages=[{"role": "user", "content": "x"}])
        client.close()
    finally:
        assert served.stop() == 0


def test_check_config(tmp_path: Path) -> None:
    good = tmp_path / "good.yaml"
    good.write_text(yaml.safe_dump(gateway_config_for_fleet(DEFAULT_FLEET, "http://127.0.0.1:9")))
    ok = subprocess.run([*EXE, "check-config", str(good)], capture_output=True, text=True)
    assert ok.returncode == 0 and "OK" in ok.stdout
    bad = tmp_path / "bad.yaml"
    bad.write_text("providers:\n  p: {type: openai, base_url: http://x/v1}\nmodels:\n  m:\n    deployments:\n"
                   "      - {provider: q, model: a, price: {input: -1}}\n")
    out = subprocess.run([*EXE, "check-config", str(bad)], capture_output=True, text=True)
    assert out.returncode == 1
    assert "models.m.deployments[0].provider: unknown provider 'q'" in out.stderr
    assert "models.m.deployments[0].price.input" in out.stderr


def test_sigterm_lets_in_flight_streams_finish(tmp_path: Path, sim: SimThread) -> None:
    cfg = gateway_config_for_fleet(DEFAULT_FLEET, sim.base_url)
    cfg["records"] = {"path": str(tmp_path / "rec.db")}
    (tmp_path / "switchboard.yaml").write_text(yaml.safe_dump(cfg))
    served = Served([], tmp_path, clean_env(tmp_path))
    reply = " ".join(f"w{i}" for i in range(20))
    client = openai.OpenAI(base_url=f"{served.url}/v1", api_key="x", max_retries=0)
    try:
        stream = client.chat.completions.create(
            model="fast", messages=[{"role": "user", "content": "hi"}], stream=True,
            extra_headers={"x-sim-reply": reply, "x-sim-tps": "20"},  # about a second of streaming
        )
        chunks = iter(stream)
        text = ""
        while not text:
            chunk = next(chunks)
            text += (chunk.choices[0].delta.content or "") if chunk.choices else ""
        served.proc.send_signal(signal.SIGTERM)  # shutdown begins while the stream is in flight
        text += "".join((c.choices[0].delta.content or "") if c.choices else "" for c in chunks)
        assert text == reply
    finally:
        client.close()
        assert served.stop() == 0


def test_serve_refuses_several_workers_counting_limits_in_memory(tmp_path: Path) -> None:
    cfg = {"auth": {"virtual_keys": True, "secret": "x" * 20}, "records": {"enabled": False}}
    (tmp_path / "switchboard.yaml").write_text(yaml.safe_dump(cfg))
    out = subprocess.run([*EXE, "serve", "--workers", "2", "--port", str(free_port())], cwd=tmp_path,
                         env=clean_env(tmp_path), capture_output=True, text=True, timeout=60)
    assert out.returncode == 1
    assert "limits.backend: redis" in out.stderr


def test_a_worker_that_fails_at_start_up_stops_the_server_and_says_why(tmp_path: Path) -> None:
    (tmp_path / "records-dir").mkdir()
    cfg = {"records": {"path": str(tmp_path / "records-dir")}}  # a directory: no database can open there
    (tmp_path / "switchboard.yaml").write_text(yaml.safe_dump(cfg))
    out = subprocess.run([*EXE, "serve", "--workers", "2", "--port", str(free_port())], cwd=tmp_path,
                         env=clean_env(tmp_path), capture_output=True, text=True, timeout=60)
    assert out.returncode != 0
    assert "start-up failed" in out.stderr


def test_the_banner_says_where_traces_go() -> None:
    from switchboard.cli.serve import ResolvedConfig, banner
    from switchboard.config.load import parse_config

    raw = gateway_config_for_fleet(DEFAULT_FLEET, "http://127.0.0.1:9")
    plain = banner(ResolvedConfig(parse_config(raw, env={}), "file:x.yaml"))
    assert "Traces" not in plain
    raw["tracing"] = {"enabled": True, "endpoint": "http://collector:4318/v1/traces", "sample_ratio": 0.25}
    traced = banner(ResolvedConfig(parse_config(raw, env={}), "file:x.yaml"))
    assert "Traces: OTLP to http://collector:4318/v1/traces (sampling 0.25 of requests" in traced


def test_a_ready_worker_freezes_what_start_up_built_and_collects_less_often() -> None:
    import gc

    from switchboard.cli.serve import tune_gc

    before = gc.get_threshold()
    try:
        garbage: list[object] = []
        garbage.append(garbage)  # a cycle: collected before the freeze, not frozen with the rest
        del garbage
        tune_gc(10_000)
        assert gc.get_threshold() == (10_000, before[1], before[2])
        assert gc.get_freeze_count() > 0
        assert gc.collect() == 0
        gc.unfreeze()
        gc.set_threshold(*before)
        tune_gc(0)  # 0: Python's own thresholds stay
        assert gc.get_threshold() == before
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)


def test_serve_raises_the_open_file_limit_to_the_hard_one() -> None:
    """Each connection is a file descriptor: a soft limit of 1,024 would cap the gateway's connections."""
    code = """
import resource
from switchboard.cli.serve import raise_open_file_limit
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))
before, after = raise_open_file_limit()
assert before == 256 and after == resource.getrlimit(resource.RLIMIT_NOFILE)[0], (before, after)
assert after == (2**20 if hard == resource.RLIM_INFINITY else min(hard, 2**20)), (after, hard)
assert raise_open_file_limit() == (after, after)  # already raised: nothing to do
"""
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
