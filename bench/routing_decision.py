"""Decision time of routing per request, on one core.

1. The learned router alone (features + model + choose), next to a trivial router (``len(prompt)``).
2. A whole router as the gateway runs it — request features, rules, the learned predictor with a
   quality target and the feedback bandit (``Router.decide``) — next to a router with rules only, and
   with ``--semantic`` routers with semantic routes: on the local MiniLM encoder, on ``minilm-static``,
   and on ``minilm-static`` with close calls confirmed by MiniLM (``confirm_margin: 0.05``).
3. Event-loop stalls: the longest delay of a 1 ms ticker on the loop while long-prompt decisions run
   concurrently, against the same ticker with no routing.

p50 and p99 for short prompts and ~4k-token prompts; Markdown tables.

Usage::

    .venv/bin/python bench/routing_decision.py            # 2000 decisions per cell
    .venv/bin/python bench/routing_decision.py --quick    # smoke test, a second or two
"""

from __future__ import annotations

import os

# One core means one BLAS thread too (numpy reads these when it is first imported).
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import asyncio  # noqa: E402
import random  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from switchboard.config.load import parse_config  # noqa: E402
from switchboard.config.model import Config  # noqa: E402
from switchboard.gateway import Gateway  # noqa: E402
from switchboard.routing.features import features_of  # noqa: E402
from switchboard.routing.learned import QualityTarget, choose, load, load_default  # noqa: E402
from switchboard.routing.stages import warm  # noqa: E402
from switchboard.schemas.canonical import ChatRequest, Message, TextPart  # noqa: E402

_SHORT = [
    "Write a python function to reverse the words in a sentence.",
    "What is the boiling point of water at the top of Mount Everest?",
    "Summarise the plot of Hamlet in two sentences.",
    "Translate 'good morning' into French and German.",
]
_PARAGRAPH = (
    "The committee reviewed the quarterly figures in detail, noting that revenue from the northern region "
    "grew faster than expected while costs in logistics rose because of fuel prices and new contracts. "
)


def _long_prompt(i: int) -> str:
    # ~4k tokens: about 16k characters of prose, then a question.
    body = (_PARAGRAPH * 90)[:16000]
    return f"{body}\n\nQuestion {i}: which region grew fastest, and why did logistics costs rise?"


def _percentiles(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    p99 = ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]
    return statistics.median(ordered), p99


def _time(fn: Callable[[str], object], prompts: list[str], n: int) -> list[float]:
    for p in prompts[:3]:
        fn(p)  # warm up
    out = []
    for i in range(n):
        prompt = prompts[i % len(prompts)]
        t0 = time.perf_counter_ns()
        fn(prompt)
        out.append((time.perf_counter_ns() - t0) / 1e6)
    return out


_NAMES = {"small": "mistralai/mistral-7b-chat", "mid": "mistralai/mixtral-8x7b-chat", "large": "gpt-4-1106-preview"}


def _router_config(semantic: bool) -> Config:
    """Three models on an unreachable provider (nothing is sent), and routers of increasing weight."""
    models = {name: {"deployments": [{"provider": "p", "model": name, "price": {"input": p, "output": 4 * p}}]}
              for name, p in (("small", 0.1), ("mid", 0.5), ("large", 10.0))}
    rules = [{"name": "gold", "when": {"metadata": {"tier": "gold"}}, "model": "large"},
             {"name": "sql", "when": {"last_user": r"(?i)\bsql\b"}, "model": "large"}]
    routers: dict[str, object] = {
        "rules": {"models": list(models), "rules": rules, "quality": {"small": 0.6, "mid": 0.75, "large": 0.9}},
        "learned": {"models": list(models), "rules": rules,
                    "learned": {"quality_target": 0.8, "names": _NAMES}, "bandit": {"exploration": 0.05}},
    }
    if semantic:
        routes = [{"name": "code", "model": "large", "examples": ["Write a python function", "Fix this bug in my code",
                                                                  "Explain this stack trace"]},
                  {"name": "chat", "model": "small", "examples": ["Hi, how are you?", "Thanks!", "Good morning"]}]
        for name, encoder in (("semantic", {}), ("semantic-static", {"encoder": "minilm-static"}),
                              ("semantic-confirm", {"encoder": "minilm-static", "confirm_margin": 0.05})):
            routers[name] = {"models": list(models), "rules": rules,
                             "semantic": {"default": "mid", "routes": routes, **encoder}}
    return parse_config({"providers": {"p": {"type": "openai", "base_url": "http://127.0.0.1:9/v1"}},
                         "models": models, "routers": routers, "records": {"enabled": False}}, env={})


async def _whole_router(n: int, semantic: bool, cells: dict[str, list[str]]) -> list[str]:
    gw = Gateway(_router_config(semantic), rng=random.Random(0))
    for router in gw.routers.values():
        await warm(router)
    rows = []
    for router_name in gw.routers:
        router = gw.routers[router_name]
        for cell, prompts in cells.items():
            samples = []
            for i in range(n + 3):
                # Every request differs, so the encoder's cache of exact texts never answers.
                text = f"{prompts[i % len(prompts)]} (request {i})"
                req = ChatRequest(router_name, [Message("user", [TextPart(text)])])
                t0 = time.perf_counter_ns()
                features = features_of(req, router_name)
                await router.decide(features, req.messages, {}, {})
                if i >= 3:  # warm-up
                    samples.append((time.perf_counter_ns() - t0) / 1e6)
            p50, p99 = _percentiles(samples)
            rows.append(f"| {router_name} | {cell} | {p50:.3f} | {p99:.3f} |")
    await gw.aclose()
    return rows


async def _stalls(n: int, prompts: list[str]) -> tuple[float, float]:
    """The longest lateness of a 1 ms ticker without and with ``n`` long-prompt decisions, 4 at a time."""
    gw = Gateway(_router_config(False), rng=random.Random(0))
    router = gw.routers["learned"]
    await warm(router)

    async def ticker(stop: asyncio.Event) -> float:
        worst = 0.0
        loop = asyncio.get_running_loop()
        while not stop.is_set():
            t0 = loop.time()
            await asyncio.sleep(0.001)
            worst = max(worst, loop.time() - t0 - 0.001)
        return worst * 1000

    async def decide(i: int) -> None:
        req = ChatRequest("learned", [Message("user", [TextPart(prompts[i % len(prompts)])])])
        await router.decide(features_of(req, "learned"), req.messages, {}, {})

    stop = asyncio.Event()
    idle_task = asyncio.create_task(ticker(stop))
    await asyncio.sleep(0.2)
    stop.set()
    idle = await idle_task
    stop = asyncio.Event()
    busy_task = asyncio.create_task(ticker(stop))
    for start in range(0, n, 4):
        await asyncio.gather(*(decide(i) for i in range(start, start + 4)))
    stop.set()
    busy = await busy_task
    await gw.aclose()
    return idle, busy


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--quick", action="store_true", help="few decisions: only shows that everything works")
    ap.add_argument("--requests", type=int, default=2000, help="decisions per cell (default: 2000)")
    ap.add_argument("--model", help="a model directory (default: the shipped model)")
    ap.add_argument("--semantic", action="store_true",
                    help="also time routers with semantic routes (MiniLM; minilm-static; minilm-static confirmed by "
                         "MiniLM within 0.05)")
    args = ap.parse_args(argv)
    n = 50 if args.quick else args.requests
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})  # one core
    t0 = time.perf_counter()
    model = load(args.model) if args.model else load_default()
    load_ms = (time.perf_counter() - t0) * 1000
    costs = model.mean_costs
    knob = QualityTarget(0.8)

    def learned(prompt: str) -> object:
        return choose(model.predict(prompt), costs, knob)

    def trivial(prompt: str) -> object:
        return model.models[-1] if len(prompt) > 1000 else model.models[0]

    cells = {
        "short (~15 tokens)": _SHORT,
        "long (~4k tokens)": [_long_prompt(i) for i in range(8)],
        "long, one block": [_long_prompt(i).replace("\n\n", " ") for i in range(8)],
    }
    print(f"model load: {load_ms:.1f} ms; {n} decisions per cell; one core")
    print()
    print("| prompts | learned p50 ms | learned p99 ms | trivial p50 ms | trivial p99 ms | p50 ratio |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, prompts in cells.items():
        lp50, lp99 = _percentiles(_time(learned, prompts, n))
        tp50, tp99 = _percentiles(_time(trivial, prompts, n))
        print(f"| {name} | {lp50:.3f} | {lp99:.3f} | {tp50:.4f} | {tp99:.4f} | {lp50 / max(tp50, 1e-6):.0f}x |")
    print()
    print("Whole router (request features + Router.decide), as the gateway runs it:")
    print()
    print("| router | prompts | p50 ms | p99 ms |")
    print("|---|---|---:|---:|")
    for row in asyncio.run(_whole_router(min(n, 500) if args.semantic else n, args.semantic, cells)):
        print(row)
    idle, busy = asyncio.run(_stalls(n, cells["long, one block"]))
    print()
    print(f"Event loop: longest 1 ms-ticker delay {idle:.2f} ms idle, {busy:.2f} ms during {n} long-prompt "
          "decisions of the learned router (4 at a time; long prompts are scored in a worker thread)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
