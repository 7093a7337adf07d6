"""Replay: run recorded requests of a time window through a candidate routing policy and compare its
choices, cost and predicted quality with what was served. Nothing is sent upstream.

What a record keeps of a routed request (``route.input``): the facts rules read (prompt size, tools,
images, JSON mode, team, tags) and — when ``records.capture_prompts`` is on — the prompt text. Without
the prompt, policies that read text (rules on the last user message, semantic routes, the learned
predictor, the bandit) cannot be replayed faithfully, so such records are counted and skipped. Headers
are not recorded, so rules on headers see none. The replayed cost assumes the replayed model would have
used the same tokens.

Usage::

    report = await replay(records, Gateway(candidate_config, rng=random.Random(0)), "auto")
    print(report.render_text())
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from switchboard.config.model import ModelConfig
from switchboard.errors import SwitchboardError
from switchboard.gateway import Gateway
from switchboard.routing.features import features_from_input
from switchboard.routing.router import Router
from switchboard.schemas.canonical import Message, TextPart, Usage
from switchboard.telemetry.record import RequestRecord, cost_usd

__all__ = ["ReplayReport", "ReplayRow", "replay"]


@dataclass(frozen=True, slots=True)
class ReplayRow:
    """One request: the model served then, the one the candidate policy picks now, their costs for the
    request's tokens and their predicted quality (when the policy predicts it)."""

    request_id: str
    served: str
    replayed: str
    served_cost: float
    replayed_cost: float
    served_quality: float | None
    replayed_quality: float | None


@dataclass(slots=True)
class ReplayReport:
    """The rows, and the records left out with why."""

    router: str
    rows: list[ReplayRow] = field(default_factory=list)
    skipped: Counter[str] = field(default_factory=Counter)

    def summary(self) -> dict[str, Any]:
        """Totals and shares, JSON-ready."""
        n = len(self.rows)
        same = sum(r.served == r.replayed for r in self.rows)
        served_cost = sum(r.served_cost for r in self.rows)
        replayed_cost = sum(r.replayed_cost for r in self.rows)
        pairs = [(r.served_quality, r.replayed_quality) for r in self.rows
                 if r.served_quality is not None and r.replayed_quality is not None]
        return {
            "router": self.router,
            "requests": n,
            "skipped": dict(self.skipped),
            "same_choice": same / n if n else None,
            "served": dict(Counter(r.served for r in self.rows).most_common()),
            "replayed": dict(Counter(r.replayed for r in self.rows).most_common()),
            "changes": {f"{a} → {b}": c for (a, b), c in
                        Counter((r.served, r.replayed) for r in self.rows if r.served != r.replayed).most_common()},
            "served_cost_usd": served_cost,
            "replayed_cost_usd": replayed_cost,
            "cost_change": (replayed_cost - served_cost) / served_cost if served_cost else None,
            "predicted_quality": None if not pairs else {
                "requests": len(pairs),
                "served": sum(a for a, _ in pairs) / len(pairs),
                "replayed": sum(b for _, b in pairs) / len(pairs),
            },
        }

    def render_text(self) -> str:
        """The summary for a terminal."""
        s = self.summary()
        lines = [f"replayed {s['requests']} requests of router {self.router}"]
        if s["skipped"]:
            lines.append("skipped: " + ", ".join(f"{n} {why}" for why, n in s["skipped"].items()))
        if not s["requests"]:
            return "\n".join(lines)
        lines.append(f"same choice: {s['same_choice']:.1%}")
        lines.append("served:   " + ", ".join(f"{m} {c}" for m, c in s["served"].items()))
        lines.append("replayed: " + ", ".join(f"{m} {c}" for m, c in s["replayed"].items()))
        for change, c in list(s["changes"].items())[:10]:
            lines.append(f"  {change}: {c}")
        change = s["cost_change"]
        lines.append(f"cost: served ${s['served_cost_usd']:.6f}, replayed ${s['replayed_cost_usd']:.6f}"
                     + (f" ({change:+.1%})" if change is not None else ""))
        q = s["predicted_quality"]
        if q is not None:
            lines.append(f"predicted quality ({q['requests']} requests): served {q['served']:.3f}, "
                         f"replayed {q['replayed']:.3f}")
        return "\n".join(lines)


def _reads_text(router: Router) -> bool:
    return (router.semantic is not None or router.learned is not None or router.bandit is not None
            or any(rule.when.last_user is not None for rule in router.config.rules))


def _cost(model: ModelConfig | None, rec: RequestRecord) -> float:
    if model is None:
        return rec.cost_usd
    usage = Usage(input_tokens=rec.input_tokens, output_tokens=rec.output_tokens, cached_tokens=rec.cached_tokens)
    return min(cost_usd(usage, d.price) for d in model.deployments)


async def replay(records: Iterable[RequestRecord], gateway: Gateway, router_name: str,
                 models: Mapping[str, ModelConfig] | None = None) -> ReplayReport:
    """Route each recorded request again with ``gateway``'s router ``router_name``.

    Records of failed requests, of other routers, or without a recorded input are skipped (and
    counted); ``models`` prices the served model when the candidate configuration lacks it.
    """
    router = gateway.routers.get(router_name)
    if router is None:
        raise ValueError(f"the candidate configuration has no router named {router_name!r}")
    known = {**(models or {}), **gateway.config.models}
    report = ReplayReport(router_name)
    needs_text = _reads_text(router)
    for rec in records:
        data = rec.route.get("input") if rec.route is not None else None
        if rec.status >= 400 or rec.public_model is None:
            report.skipped["failed requests"] += 1
            continue
        if not isinstance(data, dict):
            report.skipped["records without routing input"] += 1
            continue
        prompt = data.get("prompt")
        if needs_text and not isinstance(prompt, str):
            report.skipped["records without a captured prompt"] += 1
            continue
        features = features_from_input(data, router.name, caller=rec.caller, metadata=rec.metadata)
        messages = [Message("user", [TextPart(prompt if isinstance(prompt, str) else features.last_user)])]
        try:
            decision = await router.decide(features, messages, {}, {})
        except SwitchboardError:
            report.skipped["requests the candidate cannot serve"] += 1
            continue
        served, replayed = rec.public_model, decision.model
        quality = {m: v["quality"] for m, v in decision.scores.items() if "quality" in v}
        report.rows.append(ReplayRow(rec.request_id, served, replayed, rec.cost_usd,
                                     _cost(known.get(replayed), rec) if replayed != served else rec.cost_usd,
                                     quality.get(served), quality.get(replayed)))
    return report
