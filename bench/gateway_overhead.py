"""Gateway overhead: direct vs Switchboard vs the LiteLLM proxy, side by side on one simulated upstream.

For every (mode, upstream delay, concurrency) cell the three targets are measured back to back by
the same load generator against the same simulator process, so ratios come from one run on one
machine. Servers run one worker each, pinned apart from the simulator and the load generator;
their CPU time and memory come from ``/proc``.

Usage::

    .venv/bin/python bench/gateway_overhead.py                        # full run, ~6 min
    .venv/bin/python bench/gateway_overhead.py --quick --skip-litellm  # smoke test, < 30 s
    .venv/bin/python bench/gateway_overhead.py --only stream --concurrency 1,64 --delays 50

Writes ``bench/results/gateway_overhead.{md,json}`` (``.quick.`` in quick mode) and prints the
Markdown. Exit status 1 if any cell saw errors, 2 if a server could not start.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import itertools
import json
import os
import platform
import shutil
import sqlite3
import subprocess
import sys
import sysconfig
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import litellm_env
import procstats
import report
from loadgen import CellSpec
from loadgen_client import LoadGenError, LoadGenProcess
from servers import ServerProcess, StartupError, free_port, python_entry, terminate_on_signals

BENCH_DIR = Path(__file__).resolve().parent
CHUNKS = 20
SIM_KEY = "sim-key"
MODES = ("non-stream", "stream")


@dataclass(frozen=True, slots=True)
class Options:
    """What to measure and for how long (per cell: whichever of requests/duration comes first)."""

    quick: bool = False
    requests: int = 20_000
    duration_s: float = 8.0
    warmup: int = 100
    warmup_max_s: float = 5.0
    timeout_s: float = 30.0
    skip_litellm: bool = False
    modes: tuple[str, ...] = MODES
    concurrency: tuple[int, ...] = (1, 16, 64)
    delays_ms: tuple[int, ...] = (0, 50)
    out_dir: Path = BENCH_DIR / "results"
    keep_logs: bool = False
    records: bool = True
    awake: bool = False
    one_cpu: bool = False
    relay: bool = False
    forwarder: bool = False
    callback: bool = False
    passthrough: bool = False


def _int_list(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values or any(v < 0 for v in values):
        raise argparse.ArgumentTypeError(f"expected non-negative integers, got {text!r}")
    return values


def parse_args(argv: Sequence[str] | None) -> Options:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="short cells for a smoke test")
    p.add_argument("--requests", type=int, help="measured requests per cell (default 20000; quick 200)")
    p.add_argument("--duration", type=float, help="max seconds per cell (default 8; quick 0.4)")
    p.add_argument("--skip-litellm", action="store_true", help="do not install or measure LiteLLM")
    p.add_argument("--only", choices=MODES, help="only non-streaming or only streaming requests")
    p.add_argument("--concurrency", type=_int_list, default=(1, 16, 64), help="e.g. 1,16,64")
    p.add_argument("--delays", type=_int_list, default=(0, 50), help="upstream TTFT in ms, e.g. 0,50")
    p.add_argument("--out-dir", type=Path, default=BENCH_DIR / "results")
    p.add_argument("--keep-logs", action="store_true", help="keep the run directory (configs, server logs)")
    p.add_argument("--no-records", action="store_true", help="run Switchboard with request recording off")
    p.add_argument("--relay", action="store_true",
                   help="also measure a do-nothing TCP relay in the gateway's place: the floor of one more hop")
    p.add_argument("--forwarder", action="store_true",
                   help="also measure an HTTP-aware forwarder made of protocol callbacks only (httptools both "
                        "ways, no tasks): the floor of a proxy that parses HTTP")
    p.add_argument("--callback", action="store_true",
                   help="also measure Switchboard's own per-request work (parsing, routing, translation, records) "
                        "run in protocol callbacks like the forwarder's: the floor of a gateway without tasks")
    p.add_argument("--passthrough", action="store_true",
                   help="also measure uvicorn + Switchboard's upstream client forwarding bytes unchanged")
    p.add_argument("--one-cpu", action="store_true",
                   help="diagnostic: pin every process to one CPU (meaningful at concurrency 1, where nothing runs "
                        "at once): no process then waits on another CPU being woken from idle")
    p.add_argument("--awake", action="store_true",
                   help="diagnostic: keep every CPU busy with a lowest-priority spinner, so no CPU idles "
                        "(shows how much of the low-rate latency is the VM waking an idle CPU)")
    a = p.parse_args(argv)
    if any(c < 1 for c in a.concurrency):
        p.error("--concurrency values must be >= 1")
    opts = Options(skip_litellm=a.skip_litellm, modes=(a.only,) if a.only else MODES,
                   concurrency=a.concurrency, delays_ms=a.delays, out_dir=a.out_dir, keep_logs=a.keep_logs,
                   records=not a.no_records, awake=a.awake, one_cpu=a.one_cpu,
                   relay=a.relay, forwarder=a.forwarder, callback=a.callback,
                   passthrough=a.passthrough)
    if a.quick:
        opts = replace(opts, quick=True, requests=200, duration_s=0.4, warmup=5, warmup_max_s=2.0,
                       timeout_s=10.0)
    if a.requests is not None:
        opts = replace(opts, requests=max(1, a.requests))
    if a.duration is not None:
        opts = replace(opts, duration_s=max(0.05, a.duration))
    return opts


@dataclass(frozen=True, slots=True)
class CpuPlan:
    """Which CPUs each process may use; the gateway never shares with the simulator or load generator."""

    gateway: set[int] | None
    sim: set[int] | None
    loadgen: set[int] | None
    note: str


def plan_cpus(one_cpu: bool = False) -> CpuPlan:
    cpus = sorted(os.sched_getaffinity(0))
    if one_cpu:
        c = {cpus[0]}
        return CpuPlan(c, c, c, f"everything on CPU {cpus[0]} (--one-cpu: no cross-CPU wake-ups)")
    if len(cpus) >= 3:
        return CpuPlan({cpus[0]}, {cpus[1]}, {cpus[2]}, f"gateway on CPU {cpus[0]}, simulator on CPU "
                       f"{cpus[1]}, load generator on CPU {cpus[2]}")
    if len(cpus) == 2:
        return CpuPlan({cpus[1]}, {cpus[0]}, {cpus[0]},
                       f"gateway on CPU {cpus[1]}; simulator and load generator share CPU {cpus[0]}")
    return CpuPlan(None, None, None, "one CPU: nothing pinned, every process competes (figures are rough)")


@dataclass(slots=True)
class Target:
    """Something the load generator sends requests to, and the process whose cost is measured."""

    name: str
    port: int
    headers: dict[str, str]
    process: ServerProcess
    startup_s: float
    peak_rss_mb: float = 0.0
    idle_cpu_pct: float | None = None
    notes: list[str] = field(default_factory=list)


def _model(delay_ms: int) -> str:
    return f"bench-{delay_ms}ms"


def _probe_body(delay_ms: int) -> bytes:
    return json.dumps({"model": _model(delay_ms), "max_tokens": 1,
                       "messages": [{"role": "user", "content": "ping"}]}).encode()


def start_sim(run_dir: Path, plan: CpuPlan, delays: Sequence[int]) -> tuple[ServerProcess, Target]:
    fleet = run_dir / "fleet.yaml"
    fleet.write_text(json.dumps({"models": [
        {"name": _model(d), "format": "openai", "ttft_ms": d, "tokens_per_second": 0, "output_tokens": CHUNKS}
        for d in delays
    ]}, indent=2))
    port = free_port()
    sim = ServerProcess("sim", python_entry("switchboard.sim.server", [
        "--host", "127.0.0.1", "--port", str(port), "--fleet", str(fleet)]), run_dir, cpus=plan.sim)
    took = sim.wait_http_ok(port, "/v1/chat/completions", timeout_s=30, post=_probe_body(delays[0]),
                            headers={"authorization": f"Bearer {SIM_KEY}"})
    return sim, Target("direct", port, {"authorization": f"Bearer {SIM_KEY}"}, sim, took)


def _start_reference(name: str, script: str, note: str, run_dir: Path, plan: CpuPlan, sim_port: int,
                     delays: Sequence[int], args: Sequence[str] = ()) -> Target:
    """A reference server from ``bench/`` in the gateway's place, on the gateway's CPU."""
    port = free_port()
    proc = ServerProcess(name, [sys.executable, str(BENCH_DIR / script), "--port", str(port),
                                "--upstream-port", str(sim_port), *args], run_dir, cpus=plan.gateway)
    headers = {"authorization": f"Bearer {SIM_KEY}", "content-type": "application/json"}
    took = proc.wait_http_ok(port, "/v1/chat/completions", timeout_s=30, post=_probe_body(delays[0]),
                             headers=headers)
    return Target(name, port, headers, proc, took, notes=[note])


def start_relay(run_dir: Path, plan: CpuPlan, sim_port: int, delays: Sequence[int]) -> Target:
    """A do-nothing byte relay: the cost of the extra hop alone."""
    return _start_reference("relay", "relay.py", "copies bytes, nothing else", run_dir, plan, sim_port, delays)


def start_forwarder(run_dir: Path, plan: CpuPlan, sim_port: int, delays: Sequence[int]) -> Target:
    """An HTTP-aware forwarder made of protocol callbacks only: what parsing HTTP twice and forwarding once
    costs without tasks, an ASGI server or an async client."""
    return _start_reference("forwarder", "http_forwarder.py", "parses HTTP both ways in callbacks, forwards",
                            run_dir, plan, sim_port, delays)


def start_callback(run_dir: Path, plan: CpuPlan, sim_port: int, delays: Sequence[int]) -> Target:
    """Switchboard's parsing, routing, translation and records called from protocol callbacks: what the gateway's
    work costs without its tasks, coroutines and ASGI server."""
    return _start_reference("callback", "callback_gateway.py", "Switchboard's work in callbacks, records on",
                            run_dir, plan, sim_port, delays, ["--models", ",".join(_model(d) for d in delays)])


def start_passthrough(run_dir: Path, plan: CpuPlan, sim_port: int, delays: Sequence[int]) -> Target:
    """uvicorn + Switchboard's upstream client forwarding bytes unchanged: the server stack's share."""
    return _start_reference("passthrough", "passthrough.py", "forwards bytes through uvicorn", run_dir, plan,
                            sim_port, delays)


def start_switchboard(run_dir: Path, plan: CpuPlan, sim_port: int, delays: Sequence[int],
                      record: bool = True, *, records_config: dict[str, Any] | None = None,
                      name: str = "switchboard", note: str | None = None, extra: dict[str, Any] | None = None,
                      env: dict[str, str] | None = None, wrap: Sequence[str] = (),
                      ready_timeout_s: float = 60.0) -> Target:
    """Switchboard in front of the simulator; ``records_config`` replaces the records section (SQLite in
    the run directory by default); ``extra`` adds configuration sections, ``env`` environment variables;
    ``wrap`` goes before the command (a profiler that runs it, such as valgrind)."""
    records = run_dir / f"{name}-records.db" if name != "switchboard" else run_dir / "records.db"
    cfg = run_dir / f"{name}.yaml"
    cfg.write_text(json.dumps({
        "providers": {"sim": {"type": "openai", "base_url": f"http://127.0.0.1:{sim_port}/v1",
                              "api_key": SIM_KEY}},
        "models": {_model(d): {"deployments": [{"provider": "sim", "model": _model(d)}]} for d in delays},
        "records": records_config or {"enabled": record, "path": str(records)},
        **(extra or {}),
    }, indent=2))
    port = free_port()
    script = Path(sys.executable).with_name("switchboard")
    prefix = [str(script)] if script.exists() else python_entry("switchboard.cli.main", [])
    proc = ServerProcess(name, [*wrap, *prefix, "serve", "--config", str(cfg), "--host", "127.0.0.1",
                                "--port", str(port)], run_dir, cpus=plan.gateway,
                         env=None if env is None else {**os.environ, **env})
    took = proc.wait_http_ok(port, "/health/ready", timeout_s=ready_timeout_s)
    if note is None:
        note = f"request records on (SQLite, {records.name})" if record else "request records OFF"
    return Target(name, port, {}, proc, took, notes=[note])


def start_litellm(run_dir: Path, plan: CpuPlan, sim_port: int, delays: Sequence[int],
                  log: Callable[[str], None]) -> tuple[Target, str]:
    env = litellm_env.ensure_installed(log=log)
    cfg = run_dir / "litellm.yaml"
    litellm_env.write_config(cfg, f"http://127.0.0.1:{sim_port}/v1", [_model(d) for d in delays], SIM_KEY)
    port = free_port()
    home = run_dir / "litellm-home"
    home.mkdir()
    proc = ServerProcess("litellm", env.command(cfg, port), run_dir, cpus=plan.gateway,
                         env=env.environment(home), cwd=run_dir)
    took = proc.wait_http_ok(port, "/health/readiness", timeout_s=120)
    return Target("litellm", port, {"authorization": f"Bearer {env.master_key}"}, proc, took,
                  notes=[litellm_env.DEFAULT_LOGGING]), env.version


def measure_cell(lg: LoadGenProcess, target: Target, sim: ServerProcess, opts: Options,
                 mode: str, delay_ms: int, conc: int) -> dict[str, Any]:
    """Warm up, sample the server, measure, sample again; one row of the report."""
    spec = CellSpec(port=target.port, model=_model(delay_ms), stream=mode == "stream", concurrency=conc,
                    requests=opts.requests, duration_s=opts.duration_s,
                    warmup=max(opts.warmup, (1 if opts.quick else 3) * conc), warmup_max_s=opts.warmup_max_s,
                    timeout_s=opts.timeout_s, headers=target.headers, max_tokens=CHUNKS)
    pid = target.process.pid
    before: dict[str, procstats.TreeSample] = {}

    def between(_warm: dict[str, Any]) -> None:
        procstats.reset_peak_rss(pid)
        before["server"], before["sim"] = procstats.sample_tree(pid), procstats.sample_tree(sim.pid)

    result = lg.run_cell(spec, between)
    after, sim_after = procstats.sample_tree(pid), procstats.sample_tree(sim.pid)
    ok = max(result["ok"], 1)
    cpu_s = after.cpu_s - before["server"].cpu_s
    sim_cpu_s = sim_after.cpu_s - before["sim"].cpu_s
    peak_mb = after.peak_rss_bytes / 1e6
    target.peak_rss_mb = max(target.peak_rss_mb, peak_mb)
    return {
        "target": target.name, "mode": mode, "delay_ms": delay_ms, "concurrency": conc,
        "loadgen": result,
        "server": {
            "processes": len(after.pids), "cpu_s": cpu_s, "cpu_ms_per_request": 1000 * cpu_s / ok,
            "cpu_utilisation": cpu_s / result["elapsed_s"] if result["elapsed_s"] else None,
            "rss_mb": after.rss_bytes / 1e6, "peak_rss_mb": peak_mb,
        },
        "upstream": {"cpu_s": sim_cpu_s, "cpu_ms_per_request": 1000 * sim_cpu_s / ok,
                     "cpu_utilisation": sim_cpu_s / result["elapsed_s"] if result["elapsed_s"] else None},
    }


def measure_idle(targets: list[Target], seconds: float) -> None:
    """CPU each server burns with no requests at all (timers, background flushes) — context for the
    low-rate cells, where it is a visible share of CPU per request."""
    before = {t.name: procstats.sample_tree(t.process.pid).cpu_s for t in targets}
    time.sleep(seconds)
    for t in targets:
        t.idle_cpu_pct = 100 * (procstats.sample_tree(t.process.pid).cpu_s - before[t.name]) / seconds


def _progress(i: int, n: int, cell: dict[str, Any]) -> str:
    lg, srv = cell["loadgen"], cell["server"]
    lat = lg["latency_ms"] or {}
    err = f"  ERRORS {lg['errors']} {lg['error_kinds']}" if lg["errors"] else ""
    return (f"[{i:>2}/{n}] {cell['mode']:<10} {cell['delay_ms']:>3} ms  c={cell['concurrency']:<3} "
            f"{cell['target']:<11} {lg['rps']:>8.0f} req/s  p50 {lat.get('p50', float('nan')):7.2f} ms  "
            f"cpu {srv['cpu_ms_per_request']:.3f} ms/req{err}")


def _count_records(db: Path) -> int | None:
    """Rows in the records database (best effort: the schema belongs to the storage module)."""
    if not db.exists():
        return None
    try:
        with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
            tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")]
            table = next((t for t in ("requests", "records") if t in tables), None)
            if table is None:
                return None
            count: int = conn.execute(f'SELECT count(*) FROM "{table}"').fetchone()[0]
            return count
    except sqlite3.Error:
        return None


def git_revision() -> str:
    """The short commit the benchmark runs at (``unknown`` outside git)."""
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=BENCH_DIR, capture_output=True,
                             text=True, timeout=10, check=True)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip()


def interpreter_build() -> str:
    """Which CPython runs the servers and how it is linked: the build moves CPU per request by about a tenth
    (docs/benchmarks.md, "The interpreter's build"), so runs on different builds do not compare."""
    with open("/proc/self/maps") as maps:
        shared = any("libpython" in line for line in maps)
    configured = sysconfig.get_config_var("CONFIG_ARGS") or ""
    flags = [f for f in ("--enable-optimizations", "--with-lto") if f in configured]
    return (f"{platform.python_implementation()} {platform.python_version()}, {os.path.realpath(sys.executable)}, "
            + ("libpython loaded as a shared library" if shared else "libpython linked into the executable")
            + (f", configured {' '.join(flags)}" if flags else ""))


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _run_cells(opts: Options, lg: LoadGenProcess, targets: list[Target], sim: ServerProcess
               ) -> list[dict[str, Any]]:
    grid = list(itertools.product(opts.modes, opts.delays_ms, opts.concurrency))
    n = len(grid) * len(targets)
    cells: list[dict[str, Any]] = []
    for mode, delay, conc in grid:
        for target in targets:
            cell = measure_cell(lg, target, sim, opts, mode, delay, conc)
            cells.append(cell)
            _log(_progress(len(cells), n, cell))
    return cells


def _meta(opts: Options, plan: CpuPlan, targets: list[Target], litellm_version: str | None,
          lg_uvloop: bool, records: int | None) -> dict[str, Any]:
    from importlib.metadata import PackageNotFoundError, version

    try:
        sb_version = version("switchboard")
    except PackageNotFoundError:
        sb_version = "unknown"
    logging = {t.name: "; ".join(t.notes) for t in targets if t.notes}
    if records is not None and "switchboard" in logging:
        logging["switchboard"] += f", {records} records written"
    setup = {
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, Linux {platform.release()}",
        "pinning": plan.note + ("; every CPU kept awake by a nice-19 spinner (--awake)" if opts.awake else ""),
        "upstream": f"Switchboard simulator, models {', '.join(_model(d) for d in opts.delays_ms)} "
                    f"(ttft as named, tokens_per_second 0, {CHUNKS} output tokens)",
        "targets": ", ".join(f"{report.TARGET_LABELS[t.name]} (ready in {t.startup_s:.1f} s)"
                             for t in targets),
        "idle CPU before the first cell": ", ".join(f"{report.TARGET_LABELS[t.name]} {t.idle_cpu_pct:.1f} %"
                                                    for t in targets if t.idle_cpu_pct is not None),
        "versions": f"switchboard {sb_version} @ {git_revision()}, Python {platform.python_version()}"
                    + (f", litellm[proxy] {litellm_version}" if litellm_version else ""),
        "interpreter": interpreter_build(),
        "Switchboard logging": logging.get("switchboard", "—"),
        "LiteLLM logging": logging.get("litellm", "not measured") if litellm_version else "not measured",
        "load generator": f"asyncio{' + uvloop' if lg_uvloop else ''}, httptools, HTTP/1.1 keep-alive, "
                          "one connection per concurrent client, closed loop",
        "cell size": f"warm-up ≥ {opts.warmup} requests (not counted), then up to {opts.requests} "
                     f"requests or {opts.duration_s:g} s, whichever comes first"
                     + (" — QUICK MODE" if opts.quick else ""),
    }
    notes = [
        "Latency: request written → last byte. TTFT: request written → first SSE frame with non-empty "
        "`delta.content`. `+` columns: the gateway minus direct in the same cell (ms); noise can make "
        "them negative.",
        "CPU ms/req: scheduler run time (schedstat) of every thread of the measured server's process tree, "
        "plus exited children's CPU, during the measured phase ÷ successful requests. For *direct* it is the "
        "simulator's own CPU.",
        "RSS MB: VmRSS after the cell. Peak RSS MB: VmHWM during the cell (reset via clear_refs before it).",
        "Each server runs one worker process. Cells of the three targets run back to back for every "
        "(mode, delay, concurrency), so machine noise hits them alike; compare within one run only.",
    ]
    return {"started_at": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"), "chunks": CHUNKS,
            "loadgen_shares_cpu_with_sim": plan.sim is not None and plan.sim == plan.loadgen,
            "idle_cpu_pct": {t.name: t.idle_cpu_pct for t in targets},
            "setup": setup, "notes": notes, "options": {k: str(v) for k, v in asdict(opts).items()}}


def _write_outputs(opts: Options, meta: dict[str, Any], cells: list[dict[str, Any]],
                   peaks: dict[str, float]) -> str:
    report.add_deltas(cells)
    checks = report.target_checks(cells, peaks)
    text = report.markdown(meta, cells, checks)
    opts.out_dir.mkdir(parents=True, exist_ok=True)
    stem = "gateway_overhead.quick" if opts.quick else "gateway_overhead"
    (opts.out_dir / f"{stem}.md").write_text(text)
    doc = {"meta": meta, "peak_rss_mb": peaks, "checks": report.checks_json(checks), "cells": cells}
    (opts.out_dir / f"{stem}.json").write_text(json.dumps(doc, indent=2) + "\n")
    _log(f"wrote {opts.out_dir / stem}.md and .json")
    return text


@contextlib.contextmanager
def _spinners() -> Iterator[None]:
    """One lowest-priority busy loop per CPU, so that no CPU ever idles during the run."""
    procs = [subprocess.Popen(["nice", "-n", "19", "taskset", "-c", str(cpu), sys.executable, "-c",
                               "while True: pass"]) for cpu in range(os.cpu_count() or 1)]
    try:
        yield
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()


def run(opts: Options) -> int:
    plan = plan_cpus(opts.one_cpu)
    run_dir = Path(tempfile.mkdtemp(prefix="switchboard-bench-"))
    targets: list[Target] = []
    litellm_version: str | None = None
    try:
        with contextlib.ExitStack() as stack:
            if opts.awake:
                stack.enter_context(_spinners())
            sim, direct = start_sim(run_dir, plan, opts.delays_ms)
            stack.callback(sim.stop)
            targets.append(direct)
            if opts.relay:
                relay = start_relay(run_dir, plan, direct.port, opts.delays_ms)
                stack.callback(relay.process.stop)
                targets.append(relay)
            if opts.forwarder:
                fw = start_forwarder(run_dir, plan, direct.port, opts.delays_ms)
                stack.callback(fw.process.stop)
                targets.append(fw)
            if opts.callback:
                cb = start_callback(run_dir, plan, direct.port, opts.delays_ms)
                stack.callback(cb.process.stop)
                targets.append(cb)
            if opts.passthrough:
                pt = start_passthrough(run_dir, plan, direct.port, opts.delays_ms)
                stack.callback(pt.process.stop)
                targets.append(pt)
            sb = start_switchboard(run_dir, plan, direct.port, opts.delays_ms, opts.records)
            stack.callback(sb.process.stop)
            targets.append(sb)
            if not opts.skip_litellm:
                ll, litellm_version = start_litellm(run_dir, plan, direct.port, opts.delays_ms, _log)
                stack.callback(ll.process.stop)
                targets.append(ll)
            for t in targets:
                t.peak_rss_mb = procstats.sample_tree(t.process.pid).peak_rss_bytes / 1e6  # start-up peak
            lg = stack.enter_context(LoadGenProcess(cpus=plan.loadgen))
            measure_idle(targets, 1.0 if opts.quick else 5.0)
            _log(f"{plan.note}; " + ", ".join(f"{t.name} :{t.port}" for t in targets))
            cells = _run_cells(opts, lg, targets, sim)
            lg_uvloop = lg.uvloop
        # All servers are stopped here, so the records database is complete.
        records = _count_records(run_dir / "records.db")
    except StartupError as exc:
        _log(f"could not start a server: {exc}")
        return 2
    except (subprocess.SubprocessError, RuntimeError) as exc:
        _log(f"could not set up LiteLLM: {exc}")
        return 2
    finally:
        if opts.keep_logs:
            _log(f"run directory kept: {run_dir}")
        else:
            shutil.rmtree(run_dir, ignore_errors=True)
    meta = _meta(opts, plan, targets, litellm_version, lg_uvloop, records)
    text = _write_outputs(opts, meta, cells, {t.name: t.peak_rss_mb for t in targets})
    print(text)
    return 1 if any(c["loadgen"]["errors"] for c in cells) else 0


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
