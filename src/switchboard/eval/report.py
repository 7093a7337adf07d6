"""Side-by-side evaluation of routers on one test split: the metrics table and the cost–quality plot.

Usage::

    summaries = [summarize(run, test, pair) for run in runs]
    print(format_table(summaries, pair))
    plot(runs, test, "curve.png")
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from switchboard.eval.baselines import RouterRun
from switchboard.eval.dataset import OutcomeSet, require_numpy
from switchboard.eval.metrics import Point, aiq, apgr, cost_to_reach, cpt, pair_curve, upper_hull

__all__ = ["Pair", "Summary", "format_table", "plot", "single_points", "summarize", "summary_json"]


@dataclass(frozen=True, slots=True)
class Pair:
    """The strong/weak models of the binary (RouteLLM) metrics."""

    strong: str
    weak: str


@dataclass(frozen=True, slots=True)
class Summary:
    """One router's figures on the test split (None where a metric does not apply or is never reached)."""

    name: str
    aiq: float
    best_quality: float
    best_cost: float
    #: 1 − (cost to reach the best single model's quality) / (that model's cost).
    saving_at_best_single: float | None
    apgr: float | None
    cpt50: float | None
    cpt80: float | None


def single_points(data: OutcomeSet) -> list[tuple[str, Point]]:
    """(model, (mean $, mean quality)) of every single model on ``data``."""
    return [(m, (float(data.costs[:, j].mean()), float(data.scores[:, j].mean()))) for j, m in
            enumerate(data.models)]


def summarize(run: RouterRun, data: OutcomeSet, pair: Pair | None) -> Summary:
    """The metrics of ``run`` on ``data``: AIQ over [c_min, c_max] of the hull of its points plus the cheapest
    model's (every router may fall back to it), the best quality and its cost, the saving at the best single
    model's quality, and APGR / CPT(50 %) / CPT(80 %) on ``pair`` when the run has pair scores."""
    singles = [p for _, p in single_points(data)]
    cheapest = min(singles)
    c_min, c_max = cheapest[0], max(c for c, _ in singles)
    hull = upper_hull([*run.points, cheapest])
    best_single = max(singles, key=lambda p: (p[1], -p[0]))
    reach = cost_to_reach(hull, best_single[1])
    top = max(run.points, key=lambda p: (p[1], -p[0]))
    a = c50 = c80 = None
    if pair is not None and run.pair_scores is not None:
        s, w = data.scores[:, data.models.index(pair.strong)], data.scores[:, data.models.index(pair.weak)]
        curve = pair_curve(run.pair_scores, s, w)
        r_s, r_w = float(s.mean()), float(w.mean())
        a, c50, c80 = apgr(curve, r_s, r_w), cpt(curve, r_s, r_w, 0.5), cpt(curve, r_s, r_w, 0.8)
    return Summary(
        name=run.name,
        aiq=aiq(hull, c_min, c_max),
        best_quality=top[1],
        best_cost=top[0],
        saving_at_best_single=None if reach is None else 1.0 - reach / best_single[0],
        apgr=a,
        cpt50=c50,
        cpt80=c80,
    )


def summary_json(summaries: Sequence[Summary], pair: Pair | None, n: int) -> dict[str, Any]:
    """A JSON-ready document of the figures."""
    return {
        "prompts": n,
        "pair": None if pair is None else asdict(pair),
        "routers": [asdict(s) for s in summaries],
    }


def format_table(summaries: Sequence[Summary], pair: Pair | None) -> str:
    """A fixed-width table, one router per row."""
    head = f"{'router':<18} {'AIQ':>6} {'best q':>7} {'at $':>9} {'save@best':>9} {'APGR':>6} {'CPT50':>6} {'CPT80':>6}"
    lines = [head, "-" * len(head)]
    for s in summaries:
        lines.append(
            f"{s.name:<18} {s.aiq:6.3f} {s.best_quality:7.3f} {s.best_cost:9.6f} {_pct(s.saving_at_best_single):>9} "
            f"{_num(s.apgr):>6} {_pct(s.cpt50):>6} {_pct(s.cpt80):>6}"
        )
    if pair is not None:
        lines.append(f"APGR / CPT on {pair.strong} (strong) vs {pair.weak} (weak); "
                      "save@best: cost saved at the best single model's quality")
    return "\n".join(lines)


def _num(x: float | None) -> str:
    return "-" if x is None else f"{x:.3f}"


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def plot(runs: Sequence[RouterRun], data: OutcomeSet, path: str | Path) -> None:
    """Write the cost–quality PNG: each router's hull and the single models as labelled points."""
    try:
        import matplotlib
    except ImportError:
        raise ImportError("the plot needs matplotlib: pip install 'switchboard[train]'") from None
    require_numpy()
    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    singles = single_points(data)
    cheapest = min(p for _, p in singles)
    c_max = max(p[0] for _, p in singles)
    fig, ax = plt.subplots(figsize=(9, 6))
    try:
        for run in runs:
            hull = upper_hull([*run.points, cheapest])
            xs = [c for c, _ in hull] + ([c_max] if hull[-1][0] < c_max else [])
            ys = [q for _, q in hull] + ([hull[-1][1]] if hull[-1][0] < c_max else [])
            ax.plot(xs, ys, marker=".", label=run.name)
        for name, (c, q) in singles:
            ax.scatter([c], [q], color="black", s=12, zorder=3)
            ax.annotate(name.split("/")[-1], (c, q), fontsize=7, xytext=(3, 3), textcoords="offset points")
        ax.set_xscale("log")
        ax.set_xlabel("mean cost per prompt ($, log scale)")
        ax.set_ylabel("mean quality")
        ax.set_title(f"Cost–quality hulls ({len(data)} prompts)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="lower right")
        fig.savefig(path, dpi=110, metadata={"Software": None})
    finally:
        plt.close(fig)
