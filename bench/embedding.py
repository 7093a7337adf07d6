"""Sentence-encoder latency for semantic routing: the numpy MiniLM encoder on one core, per request.

Each cell encodes one text per call, as the gateway does per request, and reports p50/p99 latency. In the
same run and on the same texts: a trivial baseline (tokenisation alone — the floor under any local
transformer encoder) and the LRU-cache hit path, so the ratios come from one machine at one moment.
Texts: a short query (~15 tokens) and a long prompt (~4,000 tokens, truncated by ``max_tokens`` 256 or
128 — the tokenizer still reads all of it). BLAS runs on one thread (set below, before numpy loads).

Usage::

    .venv/bin/python bench/embedding.py            # ~1 minute
    .venv/bin/python bench/embedding.py --quick    # smoke test, a few seconds

Writes ``bench/results/embedding.{md,json}`` (``.quick.`` in quick mode) and prints the Markdown.
"""

from __future__ import annotations

import os

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "RAYON_NUM_THREADS"):
    os.environ[_var] = "1"  # the one-core figure: before numpy (and the tokenizer's thread pool) start

import argparse  # noqa: E402
import datetime as dt  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import random  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from dataclasses import asdict, dataclass  # noqa: E402
from pathlib import Path  # noqa: E402

from switchboard.routing.embeddings import CachedEncoder, MiniLMEncoder  # noqa: E402

BENCH_DIR = Path(__file__).resolve().parent
SHORT = "How do I get a refund for the second charge on my credit card this month?"
_WORDS = ("the", "quarterly", "revenue", "report", "shows", "growth", "across", "regions", "while", "costs", "in",
          "logistics", "rose", "sharply", "as", "demand", "for", "cloud", "services", "increased", "and", "team",
          "plans", "hiring", "engineering", "support", "sales")


def long_text(tokens: int = 4000, seed: int = 7) -> str:
    """A deterministic prose-like text of roughly ``tokens`` tokens (these words are one token each)."""
    rng = random.Random(seed)
    words = [rng.choice(_WORDS) for _ in range(tokens)]
    return " ".join(w + ("." if i % 17 == 16 else "") for i, w in enumerate(words))


@dataclass(frozen=True, slots=True)
class Cell:
    """One measured path: what was called on which text, and its latency distribution in milliseconds."""

    path: str
    text: str
    max_tokens: int
    tokens_read: int
    calls: int
    p50_ms: float
    p99_ms: float
    mean_ms: float


def _measure(fn: Callable[[], object], calls: int, max_seconds: float) -> list[float]:
    fn()  # warm-up: first-call allocations, caches
    samples: list[float] = []
    deadline = time.perf_counter() + max_seconds
    while len(samples) < calls and (not samples or time.perf_counter() < deadline):
        start = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - start) * 1e3)
    return samples


def _percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def _paths(encoder: MiniLMEncoder, cached: CachedEncoder, text: str) -> dict[str, Callable[[], object]]:
    return {
        # The encoder's own tokenizer and truncation: exactly what the forward pass reads, nothing more.
        "tokenize only (baseline)": lambda: encoder.token_counts([text]),
        "MiniLM encode": lambda: encoder.encode([text]),
        "cache hit": lambda: cached.encode([text]),  # the warm-up call fills the entry
    }


def run(quick: bool) -> tuple[list[Cell], dict[str, float]]:
    """Measure every cell; also returns load times (seconds) of the encoders."""
    calls, seconds = (5, 1.0) if quick else (300, 8.0)
    texts = {"short": SHORT, "long": long_text()}
    cells: list[Cell] = []
    loads: dict[str, float] = {}
    for max_tokens in (256, 128):
        start = time.perf_counter()
        encoder = MiniLMEncoder(max_tokens=max_tokens)
        loads[f"max_tokens={max_tokens}"] = time.perf_counter() - start
        cached = CachedEncoder(encoder, max_text_chars=1 << 20)  # by default texts over 4,096 chars are not stored
        for name, text in texts.items():
            for path, fn in _paths(encoder, cached, text).items():
                samples = _measure(fn, calls, seconds)
                cells.append(Cell(path, name, max_tokens, encoder.token_counts([text])[0], len(samples),
                                  _percentile(samples, 0.5), _percentile(samples, 0.99), statistics.fmean(samples)))
    return cells, loads


def to_markdown(cells: list[Cell], loads: dict[str, float], quick: bool) -> str:
    """The results table, with each path's p50 as a multiple of the baseline's for the same text and bound."""
    base = {(c.text, c.max_tokens): c.p50_ms for c in cells if c.path.startswith("tokenize")}
    lines = [
        f"# Sentence-encoder latency{' (quick: figures only show it works)' if quick else ''}",
        "",
        f"{platform.processor() or platform.machine()}, Python {platform.python_version()}, one BLAS thread; "
        f"encoder load (read + sha256 + layout): " + ", ".join(f"{k} {v:.2f} s" for k, v in loads.items()),
        "",
        "| text | max_tokens | tokens read | path | calls | p50 ms | p99 ms | p50 / baseline |",
        "|---|---:|---:|---|---:|---:|---:|---:|",
    ]
    for c in cells:
        ratio = c.p50_ms / base[(c.text, c.max_tokens)]
        lines.append(f"| {c.text} | {c.max_tokens} | {c.tokens_read} | {c.path} | {c.calls} | {c.p50_ms:.3f} | "
                     f"{c.p99_ms:.3f} | {ratio:.2f}× |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="a few calls per cell: a smoke test")
    p.add_argument("--out-dir", type=Path, default=BENCH_DIR / "results")
    args = p.parse_args(argv)
    cells, loads = run(args.quick)
    markdown = to_markdown(cells, loads, args.quick)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    stem = "embedding.quick" if args.quick else "embedding"
    (args.out_dir / f"{stem}.md").write_text(markdown)
    doc = {"when": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), "quick": args.quick,
           "python": sys.version.split()[0], "load_seconds": loads, "cells": [asdict(c) for c in cells]}
    (args.out_dir / f"{stem}.json").write_text(json.dumps(doc, indent=2))
    print(markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
