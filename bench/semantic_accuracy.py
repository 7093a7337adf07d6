"""How well, and how fast, semantic routes find the intent of a question, per encoder, on real questions.

The data are 264 banking questions in 11 closely related intents (``bench/data/banking77-subset.csv``, from
Banking77). Each round draws ``--examples`` questions per intent as the route's examples and asks the rest;
figures are means over ``--rounds`` rounds. For each encoder:

- **top route**: the route with the highest score is the question's intent (thresholds aside);
- **routed right**: the route chosen as the gateway chooses it (fitted thresholds; below all of them the
  request falls to the default, which counts as wrong);
- **confirmed**: with ``minilm-static`` and ``confirm_margin``, the share of questions that were close calls
  and went to MiniLM;
- **p50 / p99 ms**: embedding the question and matching it, per question, on one core.

Usage::

    .venv/bin/python bench/semantic_accuracy.py             # 20 rounds, 8 examples per intent
    .venv/bin/python bench/semantic_accuracy.py --quick     # 2 rounds
"""

from __future__ import annotations

import os

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")  # one core means one BLAS thread too

import argparse  # noqa: E402
import csv  # noqa: E402
import random  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from switchboard.routing.embeddings import MiniLMEncoder  # noqa: E402
from switchboard.routing.embeddings.static import StaticEncoder  # noqa: E402
from switchboard.routing.strategies.semantic import SemanticRoute, build_index, is_close_call, match  # noqa: E402

DATA = Path(__file__).resolve().parent / "data" / "banking77-subset.csv"


Split = tuple[list[SemanticRoute], list[tuple[str, str]]]  # the routes, and the questions with their intents


def _rounds(rows: list[tuple[str, str]], rounds: int, k: int) -> list[Split]:
    intents = sorted({label for _, label in rows})
    out = []
    for r in range(rounds):
        rnd = random.Random(r)
        routes, asked = [], []
        for intent in intents:
            texts = [t for t, label in rows if label == intent]
            rnd.shuffle(texts)
            routes.append(SemanticRoute(intent, tuple(texts[:k])))
            asked += [(t, intent) for t in texts[k:]]
        out.append((routes, asked))
    return out


def _evaluate(name: str, encode: Callable[[list[str]], Any], splits: list[Split],
              confirm: tuple[Callable[[list[str]], Any], float] | None = None) -> str:
    top = right = confirmed = total = 0
    times: list[float] = []
    for routes, asked in splits:
        index = build_index(routes, encode([e for r in routes for e in r.examples]))
        fine = None if confirm is None else build_index(routes, confirm[0]([e for r in routes for e in r.examples]))
        for text, intent in asked:
            t0 = time.perf_counter_ns()
            found = match(index, encode([text])[0])
            if confirm is not None and fine is not None and is_close_call(found, confirm[1]):
                found = match(fine, confirm[0]([text])[0])
                confirmed += 1
            times.append((time.perf_counter_ns() - t0) / 1e6)
            total += 1
            right += found.route == intent
            top += max(found.scores, key=lambda s: s.score).route == intent
    ordered = sorted(times)
    p50, p99 = statistics.median(ordered), ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]
    share = f"{100 * confirmed / total:.0f} %" if confirm is not None else "–"
    return f"| {name} | {top / total:.3f} | {right / total:.3f} | {share} | {p50:.3f} | {p99:.3f} |"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--quick", action="store_true", help="two rounds: only shows that everything works")
    ap.add_argument("--rounds", type=int, default=20, help="random splits (default 20)")
    ap.add_argument("--examples", type=int, default=8, help="examples per route (default 8)")
    args = ap.parse_args(argv)
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})  # one core
    with DATA.open(newline="", encoding="utf-8") as fh:
        rows = [(r["text"], r["category"]) for r in csv.DictReader(fh)]
    splits = _rounds(rows, 2 if args.quick else args.rounds, args.examples)
    t0 = time.perf_counter()
    static = StaticEncoder.from_minilm()  # builds and caches the table on first use (about half a minute)
    static_s = time.perf_counter() - t0
    minilm = MiniLMEncoder(max_tokens=128)
    intents = len({label for _, label in rows})
    print(f"{len(rows)} questions, {intents} intents, {args.examples} examples per route, {len(splits)} rounds; "
          f"one core; static table ready in {static_s:.1f} s")
    print()
    print("| encoder | top route | routed right | confirmed by MiniLM | p50 ms | p99 ms |")
    print("|---|---:|---:|---:|---:|---:|")
    print(_evaluate("minilm", minilm.encode, splits))
    print(_evaluate("minilm-static", static.encode, splits))
    for margin in (0.02, 0.05):
        print(_evaluate(f"minilm-static, confirm_margin {margin}", static.encode, splits, (minilm.encode, margin)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
