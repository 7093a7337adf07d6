"""Admit + settle round trips per second: MemoryLimiter and RedisLimiter, on one event loop.

Each cell runs ``concurrency`` tasks that each admit a request (one scope with all six limits set, high
enough never to refuse) and settle it, over and over, for a fixed number of pairs or seconds. For Redis
each pair is two script calls (two round trips); the keys live under a fresh prefix and are erased
afterwards. Timings vary with the machine: compare figures within one run.

Usage::

    .venv/bin/python bench/limits.py --quick                 # a few thousand pairs per cell, ~1 s
    .venv/bin/python bench/limits.py --seconds 5 --concurrency 1,16,64,256
    .venv/bin/python bench/limits.py --redis-url redis://10.0.0.5:6379/15
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from switchboard.policy.limits import Ask, Limiter, LimiterUnavailable, Limits, MemoryLimiter, Scope

SUBJECT = "key:bench"
LIMITS = Limits(rpm=10**9, tpm=10**12, max_concurrency=10**6, budget_day=1e12, budget_month=1e12, budget_total=1e12)


@dataclass(frozen=True, slots=True)
class Cell:
    backend: str
    concurrency: int
    pairs: int
    seconds: float

    @property
    def rate(self) -> float:
        return self.pairs / self.seconds if self.seconds > 0 else 0.0


async def measure(limiter: Limiter, concurrency: int, max_pairs: int, max_seconds: float) -> tuple[int, float]:
    """Run admit+settle pairs from ``concurrency`` tasks until ``max_pairs`` or ``max_seconds``; (pairs, seconds)."""
    scope = Scope(SUBJECT, LIMITS)
    ids = itertools.count()
    done = 0
    deadline = time.perf_counter() + max_seconds

    async def worker() -> None:
        nonlocal done
        while done < max_pairs and time.perf_counter() < deadline:
            rid = f"b{next(ids)}"
            admission = await limiter.admit(Ask(rid, (scope,), tokens=1000, cost=0.001, ttl=600.0))
            if not admission.admitted:
                raise RuntimeError(f"refused: {admission.refusal}")
            await limiter.settle(rid, [SUBJECT], 800, 0.0008)
            done += 1

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return done, time.perf_counter() - started


async def run_backend(name: str, build: Callable[[], Limiter], levels: list[int], max_pairs: int,
                      max_seconds: float) -> list[Cell]:
    limiter = build()
    cells = []
    try:
        await limiter.ping()
        await measure(limiter, 8, min(200, max_pairs), max_seconds)  # warm-up: connections, script cache
        for concurrency in levels:
            pairs, seconds = await measure(limiter, concurrency, max_pairs, max_seconds)
            cells.append(Cell(name, concurrency, pairs, seconds))
        await limiter.erase(SUBJECT)
    finally:
        await limiter.aclose()
    return cells


def table(cells: list[Cell]) -> str:
    lines = ["| backend | concurrency | pairs | seconds | admit+settle / s | µs per pair |",
             "|---|---:|---:|---:|---:|---:|"]
    for c in cells:
        per = c.seconds / c.pairs * 1e6 if c.pairs else float("nan")
        lines.append(f"| {c.backend} | {c.concurrency} | {c.pairs} | {c.seconds:.3f} | {c.rate:,.0f} | {per:,.1f} |")
    return "\n".join(lines)


async def main(args: argparse.Namespace) -> int:
    levels = [int(x) for x in args.concurrency.split(",")]
    max_pairs = args.pairs if args.pairs else (3000 if args.quick else 10**9)
    max_seconds = 0.5 if args.quick else args.seconds
    cells = await run_backend("memory", MemoryLimiter, levels, max_pairs * 10, max_seconds)
    try:
        from switchboard.policy.limits_redis import RedisLimiter
    except ImportError as exc:
        print(f"redis: skipped ({exc})", file=sys.stderr)
    else:
        prefix = f"sbbench:{uuid.uuid4().hex[:8]}:"
        try:
            cells += await run_backend("redis", lambda: RedisLimiter(args.redis_url, prefix=prefix), levels,
                                       max_pairs, max_seconds)
        except LimiterUnavailable as exc:
            print(f"redis: skipped ({exc})", file=sys.stderr)
    loop = type(asyncio.get_running_loop()).__module__.split(".")[0]
    print(f"Python {sys.version.split()[0]}, event loop: {loop}, one process\n")
    print(table(cells))
    return 0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="small cells (≤ 3000 pairs for Redis, ≤ 0.5 s)")
    parser.add_argument("--concurrency", default="1,64", help="comma-separated task counts (default 1,64)")
    parser.add_argument("--seconds", type=float, default=3.0, help="most seconds per cell (default 3)")
    parser.add_argument("--pairs", type=int, default=0, help="most pairs per Redis cell (memory: 10×)")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/15")
    parser.add_argument("--no-uvloop", action="store_true", help="the standard asyncio loop instead of uvloop")
    return parser.parse_args(argv)


if __name__ == "__main__":
    arguments = parse_args()
    if arguments.no_uvloop:
        sys.exit(asyncio.run(main(arguments)))
    try:
        import uvloop
    except ImportError:
        sys.exit(asyncio.run(main(arguments)))
    sys.exit(uvloop.run(main(arguments)))
