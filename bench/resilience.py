"""Resilience under failing upstreams: Switchboard and the LiteLLM proxy, side by side, same simulator.

One public model (``bench-chat``) has two equally weighted deployments on the simulator: ``steady``
(always healthy) and ``flaky``. For each request kind (non-streaming, streaming) and each target, a
fresh gateway process goes through three phases under closed-loop load: **healthy** (the baseline
for "added" latency), **flaky 30 %** (``flaky`` fails 30 % of its requests: 500, 503, connection
reset before any content, or a hang until the client leaves, drawn at random), then **flaky 100 %**. The phases follow
each other without a pause, so each failure phase also measures how fast the gateway adapts. Phases
last a fixed time (not a fixed number of requests): breakers, cooldowns and retry-after are all
timed, so both gateways get the same time to learn, however fast each one serves.

The bar (the resilience issue's "done when"): at least 99.9 % of requests succeed as the client
sees them, in both failure phases, streaming and not.

Usage::

    .venv/bin/python bench/resilience.py                          # full run, ~17 min with LiteLLM
    .venv/bin/python bench/resilience.py --quick --skip-litellm   # smoke test, < 30 s
    .venv/bin/python bench/resilience.py --only stream --seconds 120 --skip-litellm --keep-logs
    .venv/bin/python bench/resilience.py --only stream --failure-modes 500,503,reset,timeout

Writes ``bench/results/resilience.{md,json}`` (``.quick.`` in quick mode) and prints the Markdown.
Exit status 0 if every Switchboard cell met the bar, 1 if one did not, 2 if a server could not
start, 130 when interrupted.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import functools
import json
import os
import platform
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import litellm_env
from gateway_overhead import CpuPlan, git_revision, plan_cpus
from loadgen import CellSpec
from loadgen_client import LoadGenError, LoadGenProcess
from servers import ServerProcess, StartupError, free_port, python_entry, terminate_on_signals

BENCH_DIR = Path(__file__).resolve().parent
MODES = ("non-stream", "stream")
MODEL = "bench-chat"
FLAKY, STEADY = "flaky", "steady"
SIM_KEY = "sim-key"
CHUNKS = 20
TTFT_MS = 20
TOKENS_PER_SECOND = 400
#: How ``flaky`` fails (one drawn per failing request), all before any content: what a gateway can hide.
#: ``--failure-modes 500,503,reset,timeout`` adds streams cut after content (the simulator's ``reset``
#: drops a stream at a random chunk), which no gateway may hide: they must end in an error event.
FAILURE_MODES = ("500", "503", "early-reset", "timeout")
SUCCESS_TARGET = 0.999
NO_LIMIT = 10_000_000
SLICES = 5  # the records table shows failures in each fifth of a phase
ATTEMPT_TIMEOUT_S = 1.0

#: Switchboard's ``resilience:`` section: the two per-attempt timeouts; retries (2 tries per
#: deployment, a failed one again only after the others, backoff 0.1–2 s, retry-after ≤ 5 s
#: honoured) and breakers (30 s window, ≥ 5 calls,
#: ≥ 50 % failed → 15 s cooldown, doubling to 300 s) are the defaults.
SWITCHBOARD_RESILIENCE: dict[str, Any] = {"attempt_timeout": ATTEMPT_TIMEOUT_S, "ttft_timeout": ATTEMPT_TIMEOUT_S}

#: LiteLLM's ``router_settings`` (read from the 1.106.2 source): 2 retries, each re-picking among the
#: deployments not cooling down, with no wait (another deployment is healthy); then one weighted
#: failover to a deployment not tried yet; 1 s per attempt (``stream_timeout`` for streams).
#: Cooldown: ``allowed_fails: 3`` cools a deployment down for 15 s (Switchboard's first cooldown)
#: once it failed more than 3 times in the current minute. Without ``allowed_fails`` LiteLLM uses
#: Switchboard's rule instead (> 50 % of at least 5 calls this minute); the count is the stricter
#: of the two here, so it keeps more requests away from ``flaky`` (``--litellm-set allowed_fails=null``
#: measures the rate rule). Resets never cool a deployment down in LiteLLM (it exempts
#: ``APIConnectionError``).
LITELLM_ROUTER_SETTINGS: dict[str, Any] = {
    "routing_strategy": "simple-shuffle",
    "num_retries": 2,
    "retry_after": 0,
    "timeout": ATTEMPT_TIMEOUT_S,
    "stream_timeout": ATTEMPT_TIMEOUT_S,
    "allowed_fails": 3,
    "cooldown_time": 15,
    "enable_weighted_failover": True,
    "fallbacks": [{MODEL: [f"{MODEL}-again"]}],
}
#: LiteLLM's model groups. Its fallbacks go from one group to another, so the same two deployments
#: are listed again as a second group (symmetric: nothing tells it which deployment is the healthy
#: one). The fallback is what rescues a stream whose upstream broke before its first chunk was sent
#: on (LiteLLM's "mid-stream fallback"); without it, those become HTTP 500s.
LITELLM_GROUPS: dict[str, tuple[str, ...]] = {MODEL: (FLAKY, STEADY), f"{MODEL}-again": (FLAKY, STEADY)}

TARGET_LABELS = {"switchboard": "Switchboard", "litellm": "LiteLLM"}


@dataclass(frozen=True, slots=True)
class Phase:
    """A stretch of the run with ``flaky`` failing this fraction of its requests."""

    name: str
    failure_rate: float


PHASES = (Phase("healthy", 0.0), Phase("flaky 30 %", 0.3), Phase("flaky 100 %", 1.0))


@dataclass(frozen=True, slots=True)
class Options:
    """What to measure and how long: each phase lasts ``phase_s`` (or ends at ``max_requests``)."""

    quick: bool = False
    phase_s: float = 75.0
    max_requests: int = NO_LIMIT
    warmup: int = 200
    warmup_max_s: float = 10.0
    concurrency: int = 16
    timeout_s: float = 30.0
    skip_litellm: bool = False
    litellm_settings: tuple[tuple[str, Any], ...] = ()  # overrides of LITELLM_ROUTER_SETTINGS
    modes: tuple[str, ...] = MODES
    out_dir: Path = BENCH_DIR / "results"
    keep_logs: bool = False
    seed: int = 1
    failure_modes: tuple[str, ...] = FAILURE_MODES


def _modes(text: str) -> tuple[str, ...]:
    modes = tuple(m.strip() for m in text.split(",") if m.strip())
    if not modes:
        raise argparse.ArgumentTypeError("expected comma-separated failure modes, e.g. 500,503,reset,timeout")
    return modes


def _setting(text: str) -> tuple[str, Any]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=JSON, got {text!r}")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value  # a bare string


def parse_args(argv: Sequence[str] | None) -> Options:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="small phases for a smoke test (figures mean nothing)")
    p.add_argument("--seconds", type=float, help="length of each phase (default 75; quick 1.5)")
    p.add_argument("--max-requests", type=int, help="end a phase early after this many requests (default: no limit)")
    p.add_argument("--concurrency", type=int, default=16, help="concurrent clients (default 16)")
    p.add_argument("--timeout", type=float, default=30.0, help="client-side timeout per request, s (default 30)")
    p.add_argument("--skip-litellm", action="store_true", help="do not install or measure LiteLLM")
    p.add_argument("--litellm-set", action="append", default=[], type=_setting, metavar="KEY=JSON",
                   help="change one of LiteLLM's router_settings, e.g. allowed_fails=3 (repeatable)")
    p.add_argument("--only", choices=MODES, help="only non-streaming or only streaming requests")
    p.add_argument("--seed", type=int, default=1, help="the simulator's seed for injected failures")
    p.add_argument("--failure-modes", type=_modes, default=FAILURE_MODES, metavar="MODE,...",
                   help=f"how flaky fails (simulator modes; default {','.join(FAILURE_MODES)})")
    p.add_argument("--out-dir", type=Path, default=BENCH_DIR / "results")
    p.add_argument("--keep-logs", action="store_true",
                   help="keep the run directory (fleet, configs, server logs, Switchboard's records databases)")
    a = p.parse_args(argv)
    if a.concurrency < 1:
        p.error("--concurrency must be >= 1")
    opts = Options(concurrency=a.concurrency, timeout_s=a.timeout, skip_litellm=a.skip_litellm,
                   litellm_settings=tuple(a.litellm_set),
                   modes=(a.only,) if a.only else MODES, out_dir=a.out_dir, keep_logs=a.keep_logs, seed=a.seed,
                   failure_modes=a.failure_modes)
    if a.quick:
        opts = replace(opts, quick=True, phase_s=1.5, warmup=20, warmup_max_s=3.0)
    if a.seconds is not None:
        opts = replace(opts, phase_s=max(0.5, a.seconds))
    if a.max_requests is not None:
        opts = replace(opts, max_requests=max(1, a.max_requests))
    return opts


# -- processes ---------------------------------------------------------------------------------


@dataclass(slots=True)
class Target:
    """A gateway process under test, as the load generator reaches it."""

    name: str
    port: int
    headers: dict[str, str]
    process: ServerProcess
    startup_s: float
    records: Path | None = None


def _sim_body(model: str) -> bytes:
    return json.dumps({"model": model, "max_tokens": 1, "messages": [{"role": "user", "content": "ping"}]}).encode()


def start_sim(run_dir: Path, plan: CpuPlan, seed: int, failure_modes: Sequence[str]) -> tuple[ServerProcess, int]:
    """The simulator with ``steady`` and ``flaky`` (failure rate 0 until a phase sets it)."""
    timing = {"format": "openai", "ttft_ms": TTFT_MS, "tokens_per_second": TOKENS_PER_SECOND, "output_tokens": CHUNKS}
    fleet = run_dir / "fleet.yaml"
    fleet.write_text(json.dumps({"models": [
        {"name": STEADY, **timing},
        {"name": FLAKY, **timing, "failure_rate": 0, "failure_modes": list(failure_modes)},
    ]}, indent=2))
    port = free_port()
    sim = ServerProcess("sim", python_entry("switchboard.sim.server", [
        "--host", "127.0.0.1", "--port", str(port), "--fleet", str(fleet), "--seed", str(seed)]),
        run_dir, cpus=plan.sim)
    sim.wait_http_ok(port, "/v1/chat/completions", timeout_s=30, post=_sim_body(STEADY),
                     headers={"authorization": f"Bearer {SIM_KEY}"})
    return sim, port


def set_failure_rate(sim_port: int, rate: float) -> None:
    """``flaky`` fails ``rate`` of its requests from now on (the simulator's control endpoint)."""
    req = urllib.request.Request(f"http://127.0.0.1:{sim_port}/_sim/models/{FLAKY}",
                                 data=json.dumps({"failure_rate": rate}).encode(),
                                 headers={"content-type": "application/json"}, method="POST")
    with urllib.request.urlopen(req, timeout=10) as resp:
        now = json.loads(resp.read())
    if now.get("failure_rate") != rate:
        raise RuntimeError(f"the simulator did not take failure_rate {rate}: {now}")


def switchboard_config(sim_port: int, records: Path) -> dict[str, Any]:
    return {
        "providers": {"sim": {"type": "openai", "base_url": f"http://127.0.0.1:{sim_port}/v1", "api_key": SIM_KEY}},
        "models": {MODEL: {"deployments": [{"provider": "sim", "model": m, "name": m, "weight": 1}
                                           for m in (FLAKY, STEADY)]}},
        "resilience": SWITCHBOARD_RESILIENCE,
        "records": {"enabled": True, "path": str(records)},
    }


def start_switchboard(run_dir: Path, plan: CpuPlan, sim_port: int, mode: str) -> Target:
    records = run_dir / f"records-{mode}.db"
    cfg = run_dir / f"switchboard-{mode}.yaml"
    cfg.write_text(json.dumps(switchboard_config(sim_port, records), indent=2))
    port = free_port()
    script = Path(sys.executable).with_name("switchboard")
    prefix = [str(script)] if script.exists() else python_entry("switchboard.cli.main", [])
    proc = ServerProcess(f"switchboard-{mode}", [*prefix, "serve", "--config", str(cfg), "--host", "127.0.0.1",
                                                 "--port", str(port)], run_dir, cpus=plan.gateway)
    took = proc.wait_http_ok(port, "/health/ready", timeout_s=60)
    return Target("switchboard", port, {}, proc, took, records)


def start_litellm(run_dir: Path, plan: CpuPlan, sim_port: int, mode: str, env: litellm_env.LiteLLMEnv,
                  overrides: Sequence[tuple[str, Any]]) -> Target:
    cfg = run_dir / f"litellm-{mode}.yaml"
    litellm_env.write_router_config(cfg, LITELLM_GROUPS, f"http://127.0.0.1:{sim_port}/v1", SIM_KEY,
                                    {**LITELLM_ROUTER_SETTINGS, **dict(overrides)})
    port = free_port()
    home = run_dir / f"litellm-home-{mode}"
    home.mkdir()
    proc = ServerProcess(f"litellm-{mode}", env.command(cfg, port), run_dir, cpus=plan.gateway,
                         env=env.environment(home), cwd=run_dir)
    took = proc.wait_http_ok(port, "/health/readiness", timeout_s=120)
    return Target("litellm", port, {"authorization": f"Bearer {env.master_key}"}, proc, took)


# -- measuring ---------------------------------------------------------------------------------


def measure_phase(lg: LoadGenProcess, target: Target, sim_port: int, opts: Options, mode: str,
                  phase: Phase) -> dict[str, Any]:
    """One phase against one target: set the failure rate, (warm up if healthy), measure."""
    set_failure_rate(sim_port, phase.failure_rate)
    healthy = phase.failure_rate == 0
    spec = CellSpec(port=target.port, model=MODEL, stream=mode == "stream", concurrency=opts.concurrency,
                    requests=opts.max_requests, duration_s=opts.phase_s,
                    warmup=opts.warmup if healthy else 0, warmup_max_s=opts.warmup_max_s,
                    timeout_s=opts.timeout_s, headers=target.headers, max_tokens=CHUNKS)
    window: list[float] = []
    result = lg.run_cell(spec, lambda _warm: window.append(time.time()))
    window.append(time.time())
    attempted = result["attempted"]
    return {
        "target": target.name, "mode": mode, "phase": phase.name, "failure_rate": phase.failure_rate,
        "window": window, "loadgen": result,
        "success_rate": result["ok"] / attempted if attempted else None,
    }


def run_target(lg: LoadGenProcess, start: Callable[[], Target], sim_port: int, opts: Options,
               mode: str) -> list[dict[str, Any]]:
    """A fresh gateway process through every phase, so each target starts from the same state."""
    set_failure_rate(sim_port, 0.0)
    target = start()
    cells: list[dict[str, Any]] = []
    try:
        for phase in PHASES:
            cell = measure_phase(lg, target, sim_port, opts, mode, phase)
            cell["startup_s"] = target.startup_s
            cells.append(cell)
            _log(_progress(cell))
    finally:
        target.process.stop()
    if target.records is not None:  # the server has stopped: its records are all written
        for cell in cells:
            cell["records"] = summarise_records(target.records, *cell["window"])
    return cells


def summarise_records(db: Path, since: float, until: float) -> dict[str, Any] | None:
    """What Switchboard's request records say about one phase (best effort: the schema belongs to
    the storage module)."""
    if not db.exists():
        return None
    try:
        with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
            rows = conn.execute(
                "SELECT started_at, status, partial, deployment, error_type, error_message, attempts FROM requests "
                "WHERE started_at >= ? AND started_at <= ? ORDER BY started_at", (since, until)).fetchall()
    except sqlite3.Error as exc:
        return {"error": str(exc)}
    served: Counter[str] = Counter()
    reasons: Counter[str] = Counter()
    failures: Counter[str] = Counter()
    examples: list[dict[str, Any]] = []
    by_slice = [0] * SLICES
    tries = more_than_one = skipped = 0
    for started_at, status, partial, deployment, error_type, error_message, attempts_json in rows:
        attempts = json.loads(attempts_json)
        tried = [a for a in attempts if a.get("outcome") != "skipped"]
        tries += len(tried)
        more_than_one += len(tried) > 1
        skipped += any(a.get("outcome") == "skipped" for a in attempts)
        for a in tried:
            if a.get("outcome") == "error":
                reasons[f"{a.get('deployment')}: {a.get('reason')}"] += 1
        if status == 200 and not partial:
            served[deployment or "?"] += 1
            continue
        failures[f"{status} {error_type or ''}{' (stream cut after content)' if partial else ''}".strip()] += 1
        by_slice[min(int(SLICES * (started_at - since) / (until - since)), SLICES - 1)] += 1
        if len(examples) < 5:
            examples.append({"status": status, "partial": bool(partial), "error_type": error_type,
                             "error_message": (error_message or "")[:300],
                             "attempts": [{k: a.get(k) for k in ("deployment", "outcome", "reason", "latency_ms")}
                                          for a in attempts]})
    n = len(rows)
    return {"recorded": n, "served_by": dict(served), "mean_attempts": tries / n if n else None,
            "more_than_one_attempt": more_than_one, "breaker_skips": skipped,
            "failed_attempts": dict(reasons.most_common()), "failures": dict(failures),
            "failures_by_fifth_of_phase": by_slice, "failure_examples": examples}


def add_judgement(cells: list[dict[str, Any]]) -> None:
    """Added latency vs the same target's healthy phase, and the ≥ 99.9 % verdict, on every cell."""
    for cell in cells:
        base = next((c for c in cells if c["target"] == cell["target"] and c["mode"] == cell["mode"]
                     and c["failure_rate"] == 0), None)
        added: dict[str, float | None] = {}
        for metric in ("latency_ms", "ttft_ms"):
            for q in ("p50", "p99"):
                a = (cell["loadgen"].get(metric) or {}).get(q)
                b = None if base is None else (base["loadgen"].get(metric) or {}).get(q)
                added[f"{metric.removesuffix('_ms')}_{q}_ms"] = None if a is None or b is None else a - b
        cell["added_vs_healthy"] = added
        rate = cell["success_rate"]
        cell["verdict"] = "n/a" if rate is None else "PASS" if rate >= SUCCESS_TARGET else "FAIL"


# -- the report --------------------------------------------------------------------------------


def _ms(value: float | None) -> str:
    return "—" if value is None else f"{value:.0f}" if abs(value) >= 100 else f"{value:.1f}"


def _added(value: float | None) -> str:
    return "—" if value is None else f"+{value:.0f}" if value >= 100 else f"{value:+.1f}"


def _attempts(mean: float | None) -> str:
    return "—" if mean is None else f"{mean:.2f}"


def _pct(rate: float | None) -> str:
    if rate is None:
        return "—"
    return "100 %" if rate == 1 else f"{100 * rate:.2f} %"


def _errors(lg: dict[str, Any]) -> str:
    if not lg["errors"]:
        return "0"
    kinds = ", ".join(f"{k}: {v}" for k, v in sorted(lg["error_kinds"].items(), key=lambda kv: -kv[1]))
    return f"**{lg['errors']}** ({kinds})"


def _phase_table(cells: list[dict[str, Any]], mode: str) -> list[str]:
    stream = mode == "stream"
    head = ["target", "phase", "requests", "success", "≥ 99.9 %", "p50 ms", "p99 ms", "+p99 ms", "p99.9 ms",
            "max ms"]
    head += ["TTFT p99 ms", "+TTFT p99 ms"] if stream else []
    head += ["req/s", "errors"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for c in (c for c in cells if c["mode"] == mode):
        lg, add = c["loadgen"], c["added_vs_healthy"]
        lat, ttft = lg["latency_ms"] or {}, lg["ttft_ms"] or {}
        healthy = c["failure_rate"] == 0
        cols = [TARGET_LABELS[c["target"]], c["phase"], str(lg["attempted"]), _pct(c["success_rate"]), c["verdict"],
                _ms(lat.get("p50")), _ms(lat.get("p99")), "—" if healthy else _added(add["latency_p99_ms"]),
                _ms(lat.get("p99.9")), _ms(lat.get("max"))]
        if stream:
            cols += [_ms(ttft.get("p99")), "—" if healthy else _added(add["ttft_p99_ms"])]
        cols += [f"{lg['rps_whole_phase']:.0f}", _errors(lg)]
        lines.append("| " + " | ".join(cols) + " |")
    return lines


def _done_when(cells: list[dict[str, Any]]) -> list[str]:
    lines = ["| target | mode | phase | success | added p99 | verdict |", "|---|---|---|---|---|---|"]
    for c in cells:
        if c["failure_rate"] == 0:
            continue
        lines.append(f"| {TARGET_LABELS[c['target']]} | {c['mode']} | {c['phase']} | {_pct(c['success_rate'])} | "
                     f"{_added(c['added_vs_healthy']['latency_p99_ms'])} ms | {c['verdict']} |")
    return lines


def _records_table(cells: list[dict[str, Any]]) -> list[str]:
    rows = [c for c in cells if c.get("records")]
    if not rows:
        return []
    lines = ["", "## What Switchboard's request records show", "",
             "| mode | phase | recorded | answered by | mean attempts | > 1 attempt | breaker skips | "
             "failed attempts | failed requests | … in each fifth of the phase |", "|" + "---|" * 10]
    for c in rows:
        r = c["records"]
        if "error" in r:
            lines.append(f"| {c['mode']} | {c['phase']} | unreadable: {r['error']} | | | | | | | |")
            continue
        served = ", ".join(f"{k} {v}" for k, v in sorted(r["served_by"].items()))
        failed = ", ".join(f"{k} {v}" for k, v in r["failed_attempts"].items()) or "0"
        fails = ", ".join(f"{k}: {v}" for k, v in r["failures"].items()) or "0"
        fifths = " · ".join(str(n) for n in r["failures_by_fifth_of_phase"])
        lines.append(f"| {c['mode']} | {c['phase']} | {r['recorded']} | {served} | {_attempts(r['mean_attempts'])} | "
                     f"{r['more_than_one_attempt']} | {r['breaker_skips']} | {failed} | {fails} | {fifths} |")
    return lines


def markdown(meta: dict[str, Any], cells: list[dict[str, Any]]) -> str:
    out = [f"# Resilience under failing upstreams — {meta['started_at']}", ""]
    out += [f"- {k}: {v}" for k, v in meta["setup"].items()]
    out += ["", f"## Client-visible success ≥ {100 * SUCCESS_TARGET:g} % in the failure phases", "",
            *_done_when(cells)]
    for mode, title in (("non-stream", "Non-streaming"), ("stream", f"Streaming ({CHUNKS} chunks)")):
        if any(c["mode"] == mode for c in cells):
            out += ["", f"## {title}", "", *_phase_table(cells, mode)]
    out += _records_table(cells)
    out += ["", "## Configurations", "", "Switchboard (`switchboard serve --config`, JSON is YAML):", "", "```json",
            json.dumps(meta["configs"]["switchboard"], indent=2), "```"]
    if "litellm" in meta["configs"]:
        out += ["", "LiteLLM (`litellm --config`, the master key comes from the environment):", "", "```json",
                json.dumps(meta["configs"]["litellm"], indent=2), "```"]
    out += ["", "## How to read this", "", *[f"- {n}" for n in meta["notes"]]]
    return "\n".join(out) + "\n"


def _meta(opts: Options, plan: CpuPlan, litellm_version: str | None, run_dir: Path) -> dict[str, Any]:
    from importlib.metadata import PackageNotFoundError, version

    try:
        sb_version = version("switchboard")
    except PackageNotFoundError:
        sb_version = "unknown"
    configs: dict[str, Any] = {"switchboard": switchboard_config(0, Path("records.db"))}
    configs["switchboard"]["providers"]["sim"]["base_url"] = "http://127.0.0.1:<sim>/v1"
    ll_cfg = next(iter(sorted(run_dir.glob("litellm-*.yaml"))), None)
    if ll_cfg is not None:
        configs["litellm"] = json.loads(ll_cfg.read_text())
        for dep in configs["litellm"]["model_list"]:
            dep["litellm_params"]["api_base"] = "http://127.0.0.1:<sim>/v1"
    setup = {
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, Linux {platform.release()}",
        "pinning": plan.note,
        "upstream": f"Switchboard simulator (seed {opts.seed}): `{STEADY}` and `{FLAKY}`, both ttft {TTFT_MS} ms, "
                    f"{TOKENS_PER_SECOND} tokens/s, {CHUNKS} output tokens; `{FLAKY}` fails the phase's share "
                    f"of its requests with one of {', '.join(opts.failure_modes)} drawn at random",
        "gateways": f"one public model `{MODEL}` = `{FLAKY}` + `{STEADY}`, equal weights; one worker process, "
                    "restarted for each request kind; Switchboard records every request to SQLite",
        "versions": f"switchboard {sb_version} @ {git_revision()}, Python {platform.python_version()}"
                    + (f", litellm[proxy] {litellm_version}" if litellm_version else ""),
        "load": f"closed loop, {opts.concurrency} concurrent clients, HTTP/1.1 keep-alive; each phase starts "
                f"requests for {opts.phase_s:g} s" + (f" (at most {opts.max_requests})" if opts.max_requests < NO_LIMIT
                                                      else "")
                + f"; warm-up of {opts.warmup} requests before the healthy phase only; client timeout "
                f"{opts.timeout_s:g} s"
                + (" — QUICK MODE" if opts.quick else ""),
    }
    notes = [
        "Success: HTTP 200 with content; for a stream, content and a closing `data: [DONE]` without an error "
        "frame. A connection that breaks, a client timeout and anything else is a failure.",
        "Latency (p50, p99, p99.9, max) is over successful requests: request written → last byte. `+p99`: this phase's "
        "p99 minus the same target's healthy p99 in this run. req/s: successful requests ÷ the whole phase.",
        "The phases follow each other without a pause on the same gateway process, so breakers and cooldowns "
        "carry over from 30 % into 100 %, and the 100 % phase includes the moment the gateway learns.",
        "`(after content)` errors are streams that broke after content had reached the client: no proxy can "
        "retry those without holding the stream back.",
    ]
    return {"started_at": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"), "setup": setup, "notes": notes,
            "configs": configs, "success_target": SUCCESS_TARGET,
            "options": {k: str(v) for k, v in asdict(opts).items()}}


# -- the run -----------------------------------------------------------------------------------


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _progress(cell: dict[str, Any]) -> str:
    lg = cell["loadgen"]
    lat = lg["latency_ms"] or {}
    err = f"  errors {lg['error_kinds']}" if lg["errors"] else ""
    return (f"{cell['mode']:<10} {cell['target']:<11} {cell['phase']:<12} {lg['attempted']:>6} req  "
            f"success {_pct(cell['success_rate']):>8}  p99 {_ms(lat.get('p99')):>6} ms  "
            f"{lg['rps_whole_phase']:6.0f} req/s{err}")


def _write_outputs(opts: Options, meta: dict[str, Any], cells: list[dict[str, Any]]) -> str:
    add_judgement(cells)
    text = markdown(meta, cells)
    opts.out_dir.mkdir(parents=True, exist_ok=True)
    stem = "resilience.quick" if opts.quick else "resilience"
    (opts.out_dir / f"{stem}.md").write_text(text)
    (opts.out_dir / f"{stem}.json").write_text(json.dumps({"meta": meta, "cells": cells}, indent=2) + "\n")
    _log(f"wrote {opts.out_dir / stem}.md and .json")
    return text


def run(opts: Options) -> int:
    plan = plan_cpus()
    run_dir = Path(tempfile.mkdtemp(prefix="switchboard-resilience-"))
    cells: list[dict[str, Any]] = []
    litellm_version: str | None = None
    try:
        with contextlib.ExitStack() as stack:
            env = None if opts.skip_litellm else litellm_env.ensure_installed(log=_log)
            litellm_version = None if env is None else env.version
            sim, sim_port = start_sim(run_dir, plan, opts.seed, opts.failure_modes)
            stack.callback(sim.stop)
            lg = stack.enter_context(LoadGenProcess(cpus=plan.loadgen))
            _log(f"{plan.note}; simulator :{sim_port}")
            for mode in opts.modes:
                starts = [functools.partial(start_switchboard, run_dir, plan, sim_port, mode)]
                if env is not None:
                    starts.append(functools.partial(start_litellm, run_dir, plan, sim_port, mode, env,
                                                    opts.litellm_settings))
                for start in starts:
                    cells += run_target(lg, start, sim_port, opts, mode)
            meta = _meta(opts, plan, litellm_version, run_dir)
    except StartupError as exc:
        _log(f"could not start a server: {exc}")
        return 2
    except LoadGenError:
        raise
    except (subprocess.SubprocessError, RuntimeError, OSError) as exc:
        _log(f"setup failed: {exc}")
        return 2
    finally:
        if opts.keep_logs:
            _log(f"run directory kept: {run_dir}")
        else:
            shutil.rmtree(run_dir, ignore_errors=True)
    print(_write_outputs(opts, meta, cells))
    missed = [c for c in cells if c["target"] == "switchboard" and c["verdict"] != "PASS"]
    return 1 if missed else 0


def main(argv: Sequence[str] | None = None) -> int:
    opts = parse_args(argv)
    with terminate_on_signals():
        try:
            return run(opts)
        except LoadGenError as exc:
            _log(f"load generator failed: {exc}")
            return 2
        except KeyboardInterrupt:
            _log("interrupted; all processes stopped")
            return 130


if __name__ == "__main__":
    sys.exit(main())
