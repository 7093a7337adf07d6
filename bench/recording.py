"""What request recording costs: Switchboard's throughput with records off, to SQLite and to PostgreSQL.

Three Switchboard processes (one worker each, pinned to the same CPU, idle while another is measured)
serve the same simulated upstream; the load generator measures each in turn, rounds in rotating order, at
concurrency 64 with a 0 ms upstream (the gateway is then the bottleneck, so recording shows fully).
PostgreSQL is a private server started for the run on the simulator's CPU at the lowest priority, as a
deployment's database runs on a machine of its own: its work is not the gateway's, and it must not slow the
simulator and load generator either (needs the server binaries, as in Debian's ``postgresql`` package).
Without them, or with ``--shared-postgres``, it is the machine's (``SWITCHBOARD_BENCH_POSTGRES_DSN``, default
``postgresql://postgres@127.0.0.1:5432/test``), unpinned, in a schema of its own dropped afterwards.

Usage::

    .venv/bin/python bench/recording.py              # 3 rounds (cells of 20,000 requests or 8 s)
    .venv/bin/python bench/recording.py --quick      # smoke test
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import os
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from gateway_overhead import CpuPlan, Options, Target, measure_cell, plan_cpus, start_sim, start_switchboard
from loadgen_client import LoadGenError, LoadGenProcess
from report import paired_change
from servers import ServerProcess, StartupError, free_port, terminate_on_signals

DSN_ENV = "SWITCHBOARD_BENCH_POSTGRES_DSN"
CONCURRENCY = 64


def _postgres(dsn: str, quiet: bool = False) -> Any | None:
    try:
        import psycopg

        return psycopg.connect(dsn, autocommit=True, connect_timeout=5)
    except Exception as exc:  # no driver or no server: measured without it, and said so
        if not quiet:
            print(f"PostgreSQL not measured: {exc}", file=sys.stderr)
        return None


def _start_postgres(run_dir: Path, plan: CpuPlan) -> tuple[ServerProcess, str] | None:
    """A private PostgreSQL cluster in the run directory, pinned to the simulator's CPU, or None without the
    server binaries. As root, the cluster runs as the ``postgres`` user (PostgreSQL refuses root)."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    initdb = found[-1] if found else shutil.which("initdb")
    if initdb is None:
        return None
    bindir = Path(initdb).parent
    data = run_dir / "pgdata"
    data.mkdir()
    as_user: list[str] = []
    if os.geteuid() == 0:
        as_user = ["runuser", "-u", "postgres", "--"]
        shutil.chown(run_dir, "postgres")
        shutil.chown(data, "postgres")
    subprocess.run([*as_user, str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust",
                    "--no-sync"], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    port = free_port()
    # At the lowest priority: on a machine of two CPUs it must share the simulator's, and at normal priority it
    # would slow the simulator and load generator down, measuring them rather than the gateway.
    proc = ServerProcess("postgres", ["nice", "-n", "19", *as_user, str(bindir / "postgres"), "-D", str(data),
                                      "-p", str(port),
                                      "-c", "listen_addresses=127.0.0.1", "-k", str(data)],
                         run_dir, cpus=plan.sim)
    dsn = f"postgresql://postgres@127.0.0.1:{port}/postgres"
    deadline = time.monotonic() + 60
    while (conn := _postgres(dsn, quiet=True)) is None:  # bounded poll until it accepts connections
        if proc.proc.poll() is not None or time.monotonic() > deadline:
            proc.stop()
            raise StartupError(f"postgres did not start:\n{proc.log_tail()}")
        time.sleep(0.1)
    conn.close()
    return proc, dsn


def run(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--quick", action="store_true", help="short cells: only shows that everything works")
    ap.add_argument("--rounds", type=int, default=3, help="measurements of each target (default 3)")
    ap.add_argument("--seconds", type=float, default=8.0, help="length of one measurement (default 8)")
    ap.add_argument("--shared-postgres", action="store_true",
                    help="use the machine's PostgreSQL (unpinned) instead of a private one")
    args = ap.parse_args(argv)
    opts = Options(quick=args.quick, skip_litellm=True, delays_ms=(0,), concurrency=(CONCURRENCY,),
                   duration_s=args.seconds)
    if args.quick:
        opts = replace(opts, requests=300, duration_s=0.5, warmup=50, warmup_max_s=1.0)
    rounds = 1 if args.quick else args.rounds
    dsn = os.environ.get(DSN_ENV, "postgresql://postgres@127.0.0.1:5432/test")
    schema = f"sb_bench_{secrets.token_hex(4)}"
    plan = plan_cpus()
    run_dir = Path(tempfile.mkdtemp(prefix="switchboard-recording-"))
    results: dict[str, list[dict[str, Any]]] = {}
    pg = None
    where = "the machine's PostgreSQL, unpinned"
    try:
        with contextlib.ExitStack() as stack:
            private = None if args.shared_postgres else _start_postgres(run_dir, plan)
            if private is not None:
                stack.callback(private[0].stop)
                dsn, where = private[1], "a private PostgreSQL on the simulator's CPU"
            pg = _postgres(dsn)
            sim, _direct = start_sim(run_dir, plan, opts.delays_ms)
            stack.callback(sim.stop)
            variants: list[tuple[str, dict[str, Any], str]] = [
                ("off", {"enabled": False}, "records off"),
                ("sqlite", {"path": str(run_dir / "records.db")}, "SQLite (WAL, batched)"),
            ]
            if pg is not None:
                variants.append(("postgres", {"backend": "postgres", "dsn": dsn, "schema": schema},
                                 f"PostgreSQL (schema {schema}, {where})"))
            targets: list[Target] = []
            for name, records, note in variants:
                t = start_switchboard(run_dir, plan, sim_port=_direct.port, delays=opts.delays_ms,
                                      records_config=records, name=f"switchboard-{name}", note=note)
                stack.callback(t.process.stop)
                targets.append(t)
            lg = stack.enter_context(LoadGenProcess(cpus=plan.loadgen))
            for r in range(rounds):
                for t in targets[r % len(targets):] + targets[:r % len(targets)]:
                    cell = measure_cell(lg, t, sim, opts, "non-stream", 0, CONCURRENCY)
                    results.setdefault(t.name, []).append(cell)
                    print(f"round {r + 1}: {t.name}: {cell['loadgen']['rps']:.0f} req/s", file=sys.stderr)
    except (StartupError, subprocess.CalledProcessError) as exc:
        print(f"could not start a server: {exc}", file=sys.stderr)
        return 2
    except LoadGenError as exc:
        print(f"load generator failed: {exc}", file=sys.stderr)
        return 2
    finally:
        if pg is not None:
            with contextlib.suppress(Exception):
                pg.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
            pg.close()
        shutil.rmtree(run_dir, ignore_errors=True)
    off = statistics.median(c["loadgen"]["rps"] for c in results["switchboard-off"])
    print(f"Throughput, non-streaming, concurrency {CONCURRENCY}, 0 ms upstream, one worker; median of {rounds} "
          f"round(s); {plan.note}; PostgreSQL: {where}\n")
    print("| records | req/s (median) | vs off | vs off, round by round | CPU ms/req | gateway CPU busy | errors |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, cells in results.items():
        rps = statistics.median(c["loadgen"]["rps"] for c in cells)
        cpu = statistics.median(c["server"]["cpu_ms_per_request"] for c in cells)
        busy = statistics.median(c["server"]["cpu_utilisation"] or 0.0 for c in cells)
        errors = sum(c["loadgen"]["errors"] for c in cells)
        paired = paired_change(cells, results["switchboard-off"])
        print(f"| {name.removeprefix('switchboard-')} | {rps:.0f} | {(rps / off - 1) * 100:+.1f} % | {paired} "
              f"| {cpu:.3f} | {busy * 100:.0f} % | {errors} |")
    return 1 if any(c["loadgen"]["errors"] for cells in results.values() for c in cells) else 0


if __name__ == "__main__":
    with terminate_on_signals():
        sys.exit(run())
