"""What governance costs: Switchboard's throughput with no authentication, and with virtual keys plus limits
and budgets counted in memory and in Redis.

Switchboard processes (one worker each, pinned to the same CPU, idle while another is measured) serve the
same simulated upstream; the load generator measures each in turn, rounds in rotating order, at concurrency
64, with a 0 ms upstream (the gateway is then the bottleneck, so the cost shows fully) and with a 50 ms one
(as a real upstream answers: the cost a deployment would see). Records are off in
every variant, so only governance differs. Each keyed variant gets a key with rpm, tpm, concurrency and
daily/total budgets set high enough never to refuse: every request is authenticated, admitted (tokens and
dollars reserved) and settled. Redis is a private ``redis-server`` started for the run on the simulator's CPU,
as a deployment's Redis runs on a machine of its own: its work is not the gateway's. Without ``redis-server``
on the PATH it is the machine's (``SWITCHBOARD_BENCH_REDIS``, default ``redis://127.0.0.1:6379/14``), under
a prefix of its own, deleted afterwards; that Redis may then share the gateway's CPU.

Usage::

    .venv/bin/python bench/governance.py              # 3 rounds of 8 s cells
    .venv/bin/python bench/governance.py --quick      # smoke test
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import shutil
import statistics
import sys
import tempfile
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from gateway_overhead import CpuPlan, Options, Target, measure_cell, plan_cpus, start_sim, start_switchboard
from loadgen_client import LoadGenError, LoadGenProcess
from report import paired_change
from servers import ServerProcess, StartupError, free_port, terminate_on_signals

REDIS_ENV = "SWITCHBOARD_BENCH_REDIS"
CONCURRENCY = 64
DELAYS = (0, 50)  # ms of upstream latency: the gateway saturated, and a realistic upstream
ADMIN = "bench-admin-" + secrets.token_hex(8)
SECRET = secrets.token_hex(24)
LIMITS = {"rpm": 10**9, "tpm": 10**12, "max_concurrency": 100_000, "budget_day": 1e9, "budget_total": 1e12}


def _redis(url: str, *, quiet: bool = False) -> Any | None:
    try:
        import redis

        client = redis.Redis.from_url(url, socket_connect_timeout=3)
        client.ping()
        return client
    except Exception as exc:  # no driver or no server: measured without it, and said so
        if not quiet:
            print(f"Redis not measured: {exc}", file=sys.stderr)
        return None


def _start_redis(run_dir: Path, plan: CpuPlan) -> tuple[ServerProcess, str] | None:
    """A private Redis pinned to the simulator's CPU, or None without ``redis-server``."""
    binary = shutil.which("redis-server")
    if binary is None:
        return None
    port = free_port()
    proc = ServerProcess("redis", [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                                   "--appendonly", "no"], run_dir, cpus=plan.sim)
    url = f"redis://127.0.0.1:{port}/0"
    deadline = time.monotonic() + 30
    while _redis(url, quiet=True) is None:  # bounded poll until it accepts connections
        if proc.proc.poll() is not None or time.monotonic() > deadline:
            proc.stop()
            raise StartupError(f"redis-server did not start:\n{proc.log_tail()}")
        time.sleep(0.05)
    return proc, url


def _create_key(target: Target) -> str:
    req = urllib.request.Request(f"http://127.0.0.1:{target.port}/admin/keys", method="POST",
                                 data=json.dumps({"name": "bench", **LIMITS}).encode(),
                                 headers={"authorization": f"Bearer {ADMIN}", "content-type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        return str(json.loads(resp.read())["key"])


def run(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--quick", action="store_true", help="short cells: only shows that everything works")
    ap.add_argument("--rounds", type=int, default=3, help="measurements of each target (default 3)")
    ap.add_argument("--seconds", type=float, default=8.0, help="length of one measurement (default 8)")
    args = ap.parse_args(argv)
    opts = Options(quick=args.quick, skip_litellm=True, delays_ms=DELAYS, concurrency=(CONCURRENCY,),
                   duration_s=args.seconds)
    if args.quick:
        opts = replace(opts, requests=300, duration_s=0.5, warmup=50, warmup_max_s=1.0)
    rounds = 1 if args.quick else args.rounds
    prefix = f"sbbench:{secrets.token_hex(4)}:"
    plan = plan_cpus()
    run_dir = Path(tempfile.mkdtemp(prefix="switchboard-governance-"))
    try:
        private = _start_redis(run_dir, plan)
    except StartupError as exc:
        print(f"{exc}; using {os.environ.get(REDIS_ENV, 'the machine’s Redis')}", file=sys.stderr)
        private = None
    url = private[1] if private is not None else os.environ.get(REDIS_ENV, "redis://127.0.0.1:6379/14")
    rd = _redis(url)
    env = {"BENCH_ADMIN_KEY": ADMIN, "BENCH_KEY_SECRET": SECRET}
    results: dict[str, list[dict[str, Any]]] = {}
    try:
        with contextlib.ExitStack() as stack:
            sim, direct = start_sim(run_dir, plan, opts.delays_ms)
            stack.callback(sim.stop)
            keyed = {"admin": {"key": "env:BENCH_ADMIN_KEY"},
                     "auth": {"virtual_keys": True, "secret": "env:BENCH_KEY_SECRET",
                              "path": str(run_dir / "keys.db")}}
            variants: list[tuple[str, dict[str, Any], str]] = [
                ("none", {}, "no authentication, no limits"),
                ("memory", {**keyed, "limits": {"backend": "memory"}}, "virtual key + limits, memory"),
            ]
            if rd is not None:
                variants.append(("redis", {**keyed, "limits": {"backend": "redis", "redis_url": url,
                                                               "prefix": prefix}},
                                 "virtual key + limits, Redis"))
            targets: list[Target] = []
            for name, extra, note in variants:
                t = start_switchboard(run_dir, plan, sim_port=direct.port, delays=opts.delays_ms,
                                      records_config={"enabled": False}, name=f"switchboard-{name}", note=note,
                                      extra=extra, env=env)
                stack.callback(t.process.stop)
                if extra:
                    t = replace(t, headers={"authorization": f"Bearer {_create_key(t)}"})
                targets.append(t)
            lg = stack.enter_context(LoadGenProcess(cpus=plan.loadgen))
            for r in range(rounds):
                for delay in DELAYS:
                    for t in targets[r % len(targets):] + targets[:r % len(targets)]:
                        cell = measure_cell(lg, t, sim, opts, "non-stream", delay, CONCURRENCY)
                        results.setdefault(f"{t.name}@{delay}", []).append(cell)
                        print(f"round {r + 1}, {delay} ms upstream: {t.name}: {cell['loadgen']['rps']:.0f} req/s",
                              file=sys.stderr)
    except StartupError as exc:
        print(f"could not start a server: {exc}", file=sys.stderr)
        return 2
    except LoadGenError as exc:
        print(f"load generator failed: {exc}", file=sys.stderr)
        return 2
    finally:
        if private is not None:
            private[0].stop()
        shutil.rmtree(run_dir, ignore_errors=True)
        if rd is not None and private is None:
            with contextlib.suppress(Exception):
                for name in rd.scan_iter(match=f"{prefix}*"):
                    rd.delete(name)
        if rd is not None:
            rd.close()
    where = "private redis-server on the simulator's CPU" if private is not None else url
    print(f"Redis: {where}")
    print(f"Throughput, non-streaming, concurrency {CONCURRENCY}, one worker, records off; median of {rounds} "
          "round(s)\n")
    print("| upstream | governance | req/s (median) | vs none | vs none, round by round | CPU ms/req "
          "| gateway CPU busy | errors |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for delay in DELAYS:
        base = statistics.median(c["loadgen"]["rps"] for c in results[f"switchboard-none@{delay}"])
        for name, cells in results.items():
            target, _, at = name.partition("@")
            if at != str(delay):
                continue
            rps = statistics.median(c["loadgen"]["rps"] for c in cells)
            cpu = statistics.median(c["server"]["cpu_ms_per_request"] for c in cells)
            busy = statistics.median(c["server"]["cpu_utilisation"] or 0.0 for c in cells)
            errors = sum(c["loadgen"]["errors"] for c in cells)
            paired = paired_change(cells, results[f"switchboard-none@{delay}"])
            print(f"| {delay} ms | {target.removeprefix('switchboard-')} | {rps:.0f} | {(rps / base - 1) * 100:+.1f} % "
                  f"| {paired} "
                  f"| {cpu:.3f} | {busy * 100:.0f} % | {errors} |")
    return 1 if any(c["loadgen"]["errors"] for cells in results.values() for c in cells) else 0


if __name__ == "__main__":
    with terminate_on_signals():
        sys.exit(run())
