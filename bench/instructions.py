"""What recording and governance cost in CPU instructions per request: a measure the machine's noise leaves alone.

Throughput on a shared machine moves by tens of percent from one second to the next, so the throughput
benchmarks (``recording.py``, ``governance.py``) need many rounds to say whether a cost is 9 % or 11 %. This one
runs each Switchboard variant under valgrind's callgrind, which counts the instructions the gateway process
executes (every thread: the event loop, the records writer, …), and divides by the requests served. The count
is the same from run to run within a fraction of a percent, whatever else the machine is doing, so a change of
a few thousand instructions per request shows. It is not a time: it leaves out the kernel (system calls, the
network stack), cache misses and the cost of switching threads, which the throughput benchmarks do include.

Variants (one worker each, non-streaming, 0 ms upstream, the same simulated upstream and load generator):
``none`` (records off, no keys), ``sqlite`` and ``postgres`` (records on), ``memory`` and ``redis`` (virtual key
with limits, records off). ``none`` runs first and again last: the two counts show the run-to-run spread.
PostgreSQL and Redis are private servers started for the run, as in ``recording.py`` and ``governance.py``.

Needs ``valgrind`` (Debian's package); each variant takes about a minute (the gateway runs some 50× slower).

Usage::

    .venv/bin/python bench/instructions.py                       # every variant, 2,000 requests each
    .venv/bin/python bench/instructions.py --variants none,redis
    .venv/bin/python bench/instructions.py --quick               # smoke test
"""

from __future__ import annotations

import argparse
import contextlib
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from gateway_overhead import CpuPlan, Target, plan_cpus, start_sim, start_switchboard
from governance import ADMIN, SECRET, _create_key, _start_redis
from loadgen import CellSpec
from loadgen_client import LoadGenError, LoadGenProcess
from recording import _start_postgres
from servers import ServerProcess, StartupError, terminate_on_signals

VARIANTS = ("none", "sqlite", "postgres", "memory", "redis")
CONCURRENCY = 16
_SUMMARY = re.compile(rb"^(?:summary|totals):\s*(\d+)", re.MULTILINE)


@dataclass(frozen=True)
class Count:
    """One variant's measurement: instructions in the counted stretch and the requests it served."""

    variant: str
    instructions: int
    requests: int
    errors: int

    @property
    def per_request(self) -> float:
        return self.instructions / max(1, self.requests)


def dump_total(text: bytes) -> int:
    """The instruction total of a callgrind dump (its ``summary:`` line, or ``totals:``)."""
    found = _SUMMARY.search(text)
    if found is None:
        raise ValueError("no summary line in the callgrind dump")
    return int(found.group(1))


def change(count: Count, base: Count) -> float:
    """``count``'s instructions per request relative to ``base``'s, in percent."""
    return (count.per_request / base.per_request - 1) * 100


def _tools() -> tuple[str, str] | None:
    valgrind, control = shutil.which("valgrind"), shutil.which("callgrind_control")
    return None if valgrind is None or control is None else (valgrind, control)


def _newest_dump(out: Path, pid: int, known: set[Path]) -> Path | None:
    found = [p for p in out.parent.glob(f"{out.name}.{pid}*") if p not in known and p.stat().st_size > 0]
    return max(found, key=lambda p: p.stat().st_mtime_ns) if found else None


def _measure(lg: LoadGenProcess, target: Target, control: str, out: Path, requests: int, warmup: int) -> Count:
    """Warm up, zero the counters, serve ``requests``, dump the counters; instructions per request."""
    pid = target.process.pid
    known = set(out.parent.glob(f"{out.name}.{pid}*"))
    spec = CellSpec(port=target.port, model="bench-0ms", stream=False, concurrency=CONCURRENCY, requests=requests,
                    duration_s=3600.0, warmup=warmup, warmup_max_s=600.0, timeout_s=120.0, headers=target.headers)

    def zero(_warm: dict[str, Any]) -> None:
        subprocess.run([control, "--zero", str(pid)], check=True, capture_output=True, timeout=120)

    result = lg.run_cell(spec, zero)
    subprocess.run([control, "--dump", str(pid)], check=True, capture_output=True, timeout=120)
    deadline = time.monotonic() + 120
    while (dump := _newest_dump(out, pid, known)) is None:  # bounded: the dump is written as the tool answers
        if time.monotonic() > deadline:
            raise StartupError(f"callgrind wrote no dump for {target.name}")
        time.sleep(0.2)
    return Count(target.name, dump_total(dump.read_bytes()), int(result["ok"]), int(result["errors"]))


def run(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--variants", default=",".join(VARIANTS), help=f"comma-separated, of {', '.join(VARIANTS)}")
    ap.add_argument("--requests", type=int, default=2000, help="requests counted per variant (default 2000)")
    ap.add_argument("--warmup", type=int, default=300, help="requests before counting starts (default 300)")
    ap.add_argument("--quick", action="store_true",
                    help="few requests, none and sqlite, none not repeated: shows that it works")
    args = ap.parse_args(argv)
    wanted = ["none", "sqlite"] if args.quick else [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = [v for v in wanted if v not in VARIANTS]
    if unknown:
        print(f"unknown variant(s): {', '.join(unknown)}; choose from {', '.join(VARIANTS)}", file=sys.stderr)
        return 2
    requests, warmup = (60, 20) if args.quick else (args.requests, args.warmup)
    tools = _tools()
    if tools is None:
        print("valgrind and callgrind_control are needed (Debian's valgrind package)", file=sys.stderr)
        return 2
    valgrind, control = tools
    plan: CpuPlan = plan_cpus()
    run_dir = Path(tempfile.mkdtemp(prefix="switchboard-instructions-"))
    counts: list[Count] = []
    try:
        with contextlib.ExitStack() as stack:
            sim, direct = start_sim(run_dir, plan, (0,))
            stack.callback(sim.stop)
            lg = stack.enter_context(LoadGenProcess(cpus=plan.loadgen))
            order = ["none", *(v for v in wanted if v != "none")]
            if "none" in wanted and len(order) > 1 and not args.quick:
                order.append("none")  # again at the end: the spread between two runs of the same server
            for i, variant in enumerate(order):
                config = _variant_config(variant, run_dir, plan, stack)
                if config is None:
                    print(f"{variant}: not measured (its server could not be started here)", file=sys.stderr)
                    continue
                records, extra = config
                name = f"switchboard-{variant}" + ("-again" if i and variant == "none" else "")
                out = run_dir / f"{name}.callgrind"
                t = start_switchboard(
                    run_dir, plan, sim_port=direct.port, delays=(0,), records_config=records, name=name,
                    extra=extra, env={"BENCH_ADMIN_KEY": ADMIN, "BENCH_KEY_SECRET": SECRET},
                    wrap=[valgrind, "--tool=callgrind", f"--callgrind-out-file={out}.%p", "--dump-instr=no"],
                    ready_timeout_s=600.0)
                try:
                    if extra:
                        t = replace(t, headers={"authorization": f"Bearer {_create_key(t)}"})
                    count = _measure(lg, t, control, out, requests, warmup)
                finally:
                    t.process.stop()
                counts.append(replace(count, variant=variant))
                print(f"{name}: {count.per_request:,.0f} instructions per request", file=sys.stderr)
    except (StartupError, subprocess.CalledProcessError) as exc:
        print(f"could not measure: {exc}", file=sys.stderr)
        return 2
    except LoadGenError as exc:
        print(f"load generator failed: {exc}", file=sys.stderr)
        return 2
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)
    print(report(counts, requests=requests, warmup=warmup))
    return 1 if any(c.errors for c in counts) else 0


def _variant_config(variant: str, run_dir: Path, plan: CpuPlan,
                    stack: contextlib.ExitStack) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """(records section, other sections) of a variant; private PostgreSQL and Redis start on first use."""
    off: dict[str, Any] = {"enabled": False}
    keyed = {"admin": {"key": "env:BENCH_ADMIN_KEY"},
             "auth": {"virtual_keys": True, "secret": "env:BENCH_KEY_SECRET",
                      "path": str(run_dir / f"{variant}-keys.db")}}
    if variant == "none":
        return off, {}
    if variant == "sqlite":
        return {"path": str(run_dir / "records.db")}, {}
    if variant == "memory":
        return off, {**keyed, "limits": {"backend": "memory"}}
    if variant == "postgres":
        pg = _private(stack, _start_postgres, run_dir, plan)
        if pg is None:
            return None
        return {"backend": "postgres", "dsn": pg, "schema": f"sb_bench_{secrets.token_hex(4)}"}, {}
    redis = _private(stack, _start_redis, run_dir, plan)
    if redis is None:
        return None
    return off, {**keyed, "limits": {"backend": "redis", "redis_url": redis, "prefix": "sbbench:"}}


def _private(stack: contextlib.ExitStack, start: Any, run_dir: Path, plan: CpuPlan) -> str | None:
    try:
        started: tuple[ServerProcess, str] | None = start(run_dir, plan)
    except StartupError as exc:
        print(str(exc), file=sys.stderr)
        return None
    if started is None:
        return None
    stack.callback(started[0].stop)
    return started[1]


def report(counts: Sequence[Count], *, requests: int, warmup: int) -> str:
    """The Markdown table: instructions per request of each variant, and against ``none``."""
    lines = [f"Instructions per request (callgrind, every thread of the gateway process), non-streaming, "
             f"0 ms upstream, concurrency {CONCURRENCY}, one worker; {requests} requests counted after {warmup} "
             "of warm-up\n",
             "| variant | instructions per request | vs none | requests | errors |", "|---|---:|---:|---:|---:|"]
    bases = [c for c in counts if c.variant == "none"]
    base = bases[0] if bases else None
    for i, c in enumerate(counts):
        label = "none (again)" if c.variant == "none" and i else c.variant
        vs = "–" if base is None or c is base else f"{change(c, base):+.1f} %"
        lines.append(f"| {label} | {c.per_request:,.0f} | {vs} | {c.requests} | {c.errors} |")
    return "\n".join(lines)


if __name__ == "__main__":
    with terminate_on_signals():
        sys.exit(run())
