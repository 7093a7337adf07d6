"""Turn measured cells into the Markdown report, the target checks and the JSON document.

A cell is one (target, mode, upstream delay, concurrency) measurement as a plain dict (see
``gateway_overhead.measure_cell``); "added" figures compare a gateway cell with the direct cell of
the same mode, delay and concurrency, measured minutes apart in the same run.

Usage::

    add_deltas(cells)
    checks = target_checks(cells)
    print(markdown(meta, cells, checks))
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

__all__ = ["Check", "add_deltas", "checks_json", "markdown", "paired_change", "target_checks"]

Cell = dict[str, Any]

TARGET_LABELS = {"direct": "direct (sim)", "relay": "byte relay (floor)", "forwarder": "callback HTTP forwarder",
                 "callback": "Switchboard's work in callbacks",
                 "passthrough": "uvicorn pass-through",
                 "switchboard": "Switchboard",
                 "litellm": "LiteLLM"}


def paired_change(cells: list[Cell], base: list[Cell]) -> str:
    """The change in throughput of ``cells`` against ``base`` round by round (cell ``i`` of each was measured
    in round ``i``, seconds apart): the median of the rounds' changes and their range. On a machine whose speed
    drifts between rounds this is steadier than comparing the two medians."""
    changes = sorted(c["loadgen"]["rps"] / b["loadgen"]["rps"] - 1 for c, b in zip(cells, base, strict=True))
    mid = len(changes) // 2
    median = changes[mid] if len(changes) % 2 else (changes[mid - 1] + changes[mid]) / 2
    return f"{median * 100:+.1f} % ({changes[0] * 100:+.1f} … {changes[-1] * 100:+.1f})"


@dataclass(frozen=True, slots=True)
class Check:
    """One project target: what it asks, what was measured and whether it holds."""

    name: str
    target: str
    measured: str
    verdict: str  # PASS, FAIL, INVALID (errors in a cell it uses) or n/a


def _key(cell: Cell) -> tuple[str, int, int]:
    return cell["mode"], cell["delay_ms"], cell["concurrency"]


def _find(cells: Iterable[Cell], target: str, mode: str, delay: int, conc: int) -> Cell | None:
    return next((c for c in cells if c["target"] == target and _key(c) == (mode, delay, conc)), None)


def _pct(cell: Cell, metric: str, q: str) -> float | None:
    summary = cell["loadgen"].get(metric)
    return None if summary is None else float(summary[q])


def add_deltas(cells: list[Cell]) -> None:
    """Add ``vs_direct`` to every gateway cell: latency/TTFT differences and throughput fraction."""
    for cell in cells:
        if cell["target"] == "direct":
            continue
        base = _find(cells, "direct", *_key(cell))
        if base is None:
            cell["vs_direct"] = None
            continue
        deltas: dict[str, float | None] = {}
        for metric, name in (("latency_ms", "latency"), ("ttft_ms", "ttft")):
            for q in ("p50", "p99"):
                a, b = _pct(cell, metric, q), _pct(base, metric, q)
                deltas[f"added_{name}_{q}_ms"] = None if a is None or b is None else a - b
        rps, base_rps = cell["loadgen"]["rps"], base["loadgen"]["rps"]
        deltas["rps_fraction_of_direct"] = rps / base_rps if base_rps else None
        cell["vs_direct"] = deltas


def _has_errors(*cells: Cell | None) -> bool:
    return any(c is not None and c["loadgen"]["errors"] for c in cells)


def _verdict(ok: bool, *cells: Cell | None) -> str:
    if _has_errors(*cells):
        return "INVALID (errors)"
    return "PASS" if ok else "FAIL"


def _cpu_ratio_check(cells: list[Cell]) -> Check:
    ratios: list[tuple[float, Cell, Cell]] = []
    for sb in (c for c in cells if c["target"] == "switchboard"):
        ll = _find(cells, "litellm", *_key(sb))
        if ll is None:
            continue
        sb_cpu, ll_cpu = sb["server"]["cpu_ms_per_request"], ll["server"]["cpu_ms_per_request"]
        if sb_cpu and ll_cpu:
            ratios.append((ll_cpu / sb_cpu, sb, ll))
    name, target = "Switchboard CPU per request vs LiteLLM", "≥ 15× less"
    if not ratios:
        return Check(name, target, "not measured (needs both gateways)", "n/a")
    worst = min(ratios, key=lambda r: r[0])
    geo = math.exp(sum(math.log(r[0]) for r in ratios) / len(ratios))
    below = [r for r in ratios if r[0] < 15]
    measured = (f"{geo:.1f}× less (geometric mean of {len(ratios)} cells); "
                f"lowest {worst[0]:.1f}× at {_cell_name(worst[1])}")
    used = [c for _, sb, ll in ratios for c in (sb, ll)]
    verdict = _verdict(geo >= 15, *used)
    if below and verdict == "PASS":
        verdict += f" ({len(below)} of {len(ratios)} cells below 15×)"
    return Check(name, target, measured, verdict)


def _added_p50_check(cells: list[Cell], target_name: str) -> Check:
    rows = [c for c in cells if c["target"] == target_name and c["concurrency"] == 1 and c.get("vs_direct")]
    label = TARGET_LABELS[target_name]
    name, target = f"{label}: added p50 latency at concurrency 1", "≤ 0.5 ms"
    if not rows:
        return Check(name, target, "not measured", "n/a")
    parts = [f"{c['vs_direct']['added_latency_p50_ms']:+.2f} ms ({c['mode']}, {c['delay_ms']} ms)"
             for c in rows]
    worst = max(c["vs_direct"]["added_latency_p50_ms"] for c in rows)
    return Check(name, target, "; ".join(parts), _verdict(worst <= 0.5, *rows, *_directs(cells, rows)))


def _throughput_check(cells: list[Cell], target_name: str) -> Check:
    rows = [c for c in cells if c["target"] == target_name and c["concurrency"] == 64 and c["delay_ms"] == 50
            and c.get("vs_direct")]
    label = TARGET_LABELS[target_name]
    name, target = f"{label}: throughput at c=64, 50 ms upstream, vs direct", "≥ 90 %"
    if not rows:
        return Check(name, target, "not measured (needs c=64 and 50 ms)", "n/a")
    parts = [f"{100 * c['vs_direct']['rps_fraction_of_direct']:.1f} % ({c['mode']})" for c in rows]
    worst = min(c["vs_direct"]["rps_fraction_of_direct"] for c in rows)
    return Check(name, target, "; ".join(parts), _verdict(worst >= 0.9, *rows, *_directs(cells, rows)))


def _rss_check(cells: list[Cell], peak: dict[str, float]) -> Check:
    name, target = "Switchboard peak RSS", "< 120 MB"
    if "switchboard" not in peak:
        return Check(name, target, "not measured", "n/a")
    value = peak["switchboard"]
    return Check(name, target, f"{value:.1f} MB (VmHWM, whole run)", "PASS" if value < 120 else "FAIL")


def _directs(cells: list[Cell], rows: list[Cell]) -> list[Cell | None]:
    return [_find(cells, "direct", *_key(c)) for c in rows]


def target_checks(cells: list[Cell], peak_rss_mb: dict[str, float]) -> list[Check]:
    """The ratios the project targets, Switchboard first, LiteLLM alongside for context."""
    checks = [_cpu_ratio_check(cells)]
    for t in ("switchboard", "litellm"):
        if any(c["target"] == t for c in cells):
            checks += [_added_p50_check(cells, t), _throughput_check(cells, t)]
    checks.append(_rss_check(cells, peak_rss_mb))
    return checks


def _saturated(cells: list[Cell], shared: bool) -> list[tuple[Cell, float]]:
    out = []
    for c in cells:
        if c["loadgen"]["elapsed_s"] < 1.0:
            continue  # CPU time comes in 10 ms ticks: too coarse for a shorter cell
        share = c["loadgen"]["loadgen_cpu_utilisation"]
        if shared:
            share += c["upstream"]["cpu_utilisation"] or 0.0
        if share >= 0.85:
            out.append((c, share))
    return out


def _cell_name(cell: Cell) -> str:
    return f"{cell['mode']}, {cell['delay_ms']} ms, c={cell['concurrency']}"


def _num(value: float | None, digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    return f"{value:.{digits}f}"


def _signed(value: float | None) -> str:
    return "—" if value is None else f"{value:+.2f}"


def _cpu(value: float | None) -> str:
    if value is None:
        return "—"
    return f"{value:.1f}" if value >= 10 else f"{value:.2f}" if value >= 1 else f"{value:.3f}"


def _row(cell: Cell, stream: bool) -> str:
    lg, srv, vs = cell["loadgen"], cell["server"], cell.get("vs_direct") or {}
    errors = lg["errors"] + lg["warmup"]["errors"]
    err = "0" if not errors else f"**{lg['errors']}** (+{lg['warmup']['errors']} warm-up)"
    cols = [
        str(cell["delay_ms"]), str(cell["concurrency"]), TARGET_LABELS[cell["target"]],
        _num(lg["rps"], 0), _num(_pct(cell, "latency_ms", "p50")), _num(_pct(cell, "latency_ms", "p90")),
        _num(_pct(cell, "latency_ms", "p99")), _signed(vs.get("added_latency_p50_ms")),
        _signed(vs.get("added_latency_p99_ms")),
    ]
    if stream:
        cols += [_num(_pct(cell, "ttft_ms", "p50")), _num(_pct(cell, "ttft_ms", "p99")),
                 _signed(vs.get("added_ttft_p50_ms")), _signed(vs.get("added_ttft_p99_ms"))]
    cols += [_cpu(srv["cpu_ms_per_request"]), _num(srv["rss_mb"], 0), _num(srv["peak_rss_mb"], 0),
             str(lg["ok"]), err]
    return "| " + " | ".join(cols) + " |"


def _table(cells: list[Cell], mode: str) -> list[str]:
    stream = mode == "stream"
    head = ["delay ms", "c", "target", "req/s", "p50 ms", "p90 ms", "p99 ms", "+p50", "+p99"]
    if stream:
        head += ["TTFT p50", "TTFT p99", "+TTFT p50", "+TTFT p99"]
    head += ["CPU ms/req", "RSS MB", "peak RSS MB", "requests", "errors"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += [_row(c, stream) for c in cells if c["mode"] == mode]
    return lines


def markdown(meta: dict[str, Any], cells: list[Cell], checks: list[Check]) -> str:
    """The whole report: setup, one table per mode, the target checks, notes."""
    out = [f"# Gateway overhead — {meta['started_at']}", ""]
    out += [f"- {k}: {v}" for k, v in meta["setup"].items()]
    for mode, title in (("non-stream", "Non-streaming"), ("stream", f"Streaming ({meta['chunks']} chunks)")):
        if any(c["mode"] == mode for c in cells):
            out += ["", f"## {title}", "", *_table(cells, mode)]
    out += ["", "## Targets", "", "| check | target | measured | verdict |", "|---|---|---|---|"]
    out += [f"| {c.name} | {c.target} | {c.measured} | {c.verdict} |" for c in checks]
    out += ["", "## How to read this", ""]
    out += [f"- {note}" for note in meta["notes"]]
    busy = _saturated(cells, meta["loadgen_shares_cpu_with_sim"])
    if busy:
        out += ["", "## Cells where the client side was busy", "",
                "The load generator (and the simulator, when they share a CPU) used ≥ 85 % of a CPU here, "
                "so these cells may understate what the server could do:", ""]
        out += [f"- {TARGET_LABELS[c['target']]}, {_cell_name(c)}: {share:.0%}" for c, share in busy]
    bad = [c for c in cells if c["loadgen"]["errors"] or c["loadgen"]["warmup"]["errors"]]
    if bad:
        out += ["", "## Cells with errors", ""]
        out += [f"- {TARGET_LABELS[c['target']]}, {_cell_name(c)}: {c['loadgen']['error_kinds']} "
                f"(warm-up: {c['loadgen']['warmup']['error_kinds']})" for c in bad]
    return "\n".join(out) + "\n"


def checks_json(checks: list[Check]) -> list[dict[str, str]]:
    return [asdict(c) for c in checks]
