"""Analytics over request records: volume, latency, errors, fallbacks, tokens, cost and what routing saved.

Savings are measured against a reference model the operator names: what the same requests (the same
tokens) would have cost at that model's price, minus what they cost. Grouping is by any bounded
attribute of a record — public model, deployment, provider, router, caller, tag, endpoint, status class.

Usage::

    report = analyze(records, by="public_model", reference=config.models["gpt-4.1"])
    print(render_table(report))
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Literal

from switchboard.config.model import ModelConfig
from switchboard.schemas.canonical import Usage
from switchboard.telemetry.record import RequestRecord, cost_usd

__all__ = [
    "GROUPINGS", "Group", "Report", "analyze", "csv_of", "group_keys", "percentile", "render_csv", "render_table",
]

Grouping = Literal["public_model", "deployment", "provider", "router", "caller", "tag", "endpoint", "status",
                   "none"]
GROUPINGS: tuple[str, ...] = ("public_model", "deployment", "provider", "router", "caller", "tag", "endpoint",
                              "status", "none")


def percentile(ordered: Sequence[float], q: float) -> float | None:
    """The nearest-rank ``q`` quantile (0–1) of already sorted values; ``None`` when there are none."""
    if not ordered:
        return None
    rank = max(1, math.ceil(q * len(ordered)))
    return ordered[rank - 1]


@dataclass(slots=True)
class Group:
    """The figures of one group of records."""

    key: str
    requests: int = 0
    errors: int = 0
    rescued: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    reference_cost_usd: float | None = None
    latency_p50_ms: float | None = None
    latency_p95_ms: float | None = None
    latency_p99_ms: float | None = None
    ttft_p50_ms: float | None = None
    ttft_p95_ms: float | None = None
    _latencies: list[float] = field(default_factory=list, repr=False)
    _ttfts: list[float] = field(default_factory=list, repr=False)

    @property
    def error_rate(self) -> float:
        """Share of requests the client saw fail (status ≥ 400, or a stream cut after content)."""
        return self.errors / self.requests if self.requests else 0.0

    @property
    def fallback_rate(self) -> float:
        """Share of requests answered by a later attempt after an earlier one failed (rescued)."""
        return self.rescued / self.requests if self.requests else 0.0

    @property
    def savings_usd(self) -> float | None:
        """Reference cost minus actual cost (negative: dearer than the reference)."""
        return None if self.reference_cost_usd is None else self.reference_cost_usd - self.cost_usd

    def as_dict(self) -> dict[str, object]:
        """JSON-ready figures, derived rates included."""
        out = {k: v for k, v in asdict(self).items() if not k.startswith("_")}
        out.update(error_rate=self.error_rate, fallback_rate=self.fallback_rate, savings_usd=self.savings_usd)
        return out


@dataclass(slots=True)
class Report:
    """Groups (largest first) and the total over all of them."""

    by: str
    reference: str | None
    groups: list[Group]
    total: Group


def group_keys(rec: RequestRecord, by: str) -> list[str]:
    """The group(s) a record belongs to (a record with several tags is in each tag's group)."""
    if by == "none":
        return ["all"]
    if by == "status":
        return [f"{rec.status // 100}xx"]
    if by == "tag":
        tags = [t.strip() for t in rec.metadata.get("tags", "").split(",") if t.strip()]
        return tags or ["(untagged)"]
    if by not in GROUPINGS:
        raise ValueError(f"cannot group by {by!r} (choose from {', '.join(GROUPINGS)})")
    value = getattr(rec, by)
    return [str(value) if value is not None else "(none)"]


def _reference_cost(rec: RequestRecord, reference: ModelConfig) -> float:
    usage = Usage(input_tokens=rec.input_tokens, output_tokens=rec.output_tokens, cached_tokens=rec.cached_tokens,
                  reasoning_tokens=rec.reasoning_tokens)
    return min(cost_usd(usage, d.price) for d in reference.deployments)


def _rescued(rec: RequestRecord) -> bool:
    return rec.status < 400 and len(rec.attempts) > 1 and any(a.outcome != "ok" for a in rec.attempts)


def _add(g: Group, rec: RequestRecord, reference: ModelConfig | None) -> None:
    g.requests += 1
    g.errors += rec.status >= 400 or rec.partial
    g.rescued += _rescued(rec)
    g.input_tokens += rec.input_tokens
    g.output_tokens += rec.output_tokens
    g.cost_usd += rec.cost_usd
    if reference is not None and rec.status < 400:
        g.reference_cost_usd = (g.reference_cost_usd or 0.0) + _reference_cost(rec, reference)
    if rec.status < 400:
        g._latencies.append(rec.latency_ms)
        if rec.ttft_ms is not None:
            g._ttfts.append(rec.ttft_ms)


def _finish(g: Group) -> Group:
    lat, ttft = sorted(g._latencies), sorted(g._ttfts)
    g.latency_p50_ms, g.latency_p95_ms, g.latency_p99_ms = (percentile(lat, q) for q in (0.5, 0.95, 0.99))
    g.ttft_p50_ms, g.ttft_p95_ms = percentile(ttft, 0.5), percentile(ttft, 0.95)
    g._latencies, g._ttfts = [], []
    return g


def analyze(records: Iterable[RequestRecord], *, by: str = "public_model", reference: ModelConfig | None = None,
            reference_name: str | None = None) -> Report:
    """Figures per group and in total. Latency percentiles count successful requests only; the reference
    cost prices the tokens of successful requests at the reference model's cheapest deployment."""
    if by not in GROUPINGS:
        raise ValueError(f"cannot group by {by!r} (choose from {', '.join(GROUPINGS)})")
    groups: dict[str, Group] = {}
    total = Group("total")
    for rec in records:
        for key in group_keys(rec, by):
            _add(groups.setdefault(key, Group(key)), rec, reference)
        _add(total, rec, reference)
    ordered = sorted(groups.values(), key=lambda g: (-g.requests, g.key))
    return Report(by, reference_name, [_finish(g) for g in ordered], _finish(total))


def _ms(v: float | None) -> str:
    return "-" if v is None else f"{v:.0f}"


def render_table(report: Report) -> str:
    """A fixed-width table for a terminal."""
    head = (f"{report.by.upper():<28} {'REQS':>7} {'ERR%':>6} {'FBK%':>6} {'P50ms':>7} {'P95ms':>7} {'P99ms':>7} "
            f"{'TTFT50':>7} {'TOK IN':>9} {'TOK OUT':>9} {'COST $':>10}")
    if report.reference is not None:
        head += f" {'SAVED $':>10}"
    lines = [head]
    for g in [*report.groups, report.total]:
        row = (f"{g.key[:28]:<28} {g.requests:>7} {g.error_rate * 100:>6.1f} {g.fallback_rate * 100:>6.1f} "
               f"{_ms(g.latency_p50_ms):>7} {_ms(g.latency_p95_ms):>7} {_ms(g.latency_p99_ms):>7} "
               f"{_ms(g.ttft_p50_ms):>7} {g.input_tokens:>9} {g.output_tokens:>9} {g.cost_usd:>10.4f}")
        if report.reference is not None:
            saved = g.savings_usd
            row += f" {'-' if saved is None else f'{saved:.4f}':>10}"
        lines.append(row)
    if report.reference is not None and report.total.reference_cost_usd:
        share = (report.total.savings_usd or 0.0) / report.total.reference_cost_usd
        lines.append(f"against {report.reference} for every request: ${report.total.reference_cost_usd:.4f}; "
                     f"saved {share:.1%}")
    return "\n".join(lines)


def render_csv(report: Report) -> str:
    """One CSV row per group, then the total."""
    return csv_of([g.as_dict() for g in [*report.groups, report.total]])


def csv_of(rows: Sequence[Mapping[str, object]]) -> str:
    """Rows of :meth:`Group.as_dict` as CSV, with a header line."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()
