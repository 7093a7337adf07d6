"""The explanation of a route plan, as people and tools read it: the router's decision (stages, scores,
ranking) and the order in which the chosen model's deployments would be tried.

The same dictionary answers a dry run (``x-switchboard-dry-run: true``), prints from
``switchboard route explain``, and (the decision part) is stored in each request record.

Usage::

    explanation(await gateway.plan(request))["decision"]["steps"]
"""

from __future__ import annotations

from switchboard.routing.plan import RoutePlan

__all__ = ["explanation", "render_text"]


def explanation(plan: RoutePlan) -> dict[str, object]:
    """The JSON-ready explanation of ``plan``."""
    return {
        "object": "switchboard.route_plan",
        "model": plan.public_model,
        "router": plan.decision.router if plan.decision is not None else None,
        "decision": plan.decision.to_dict() if plan.decision is not None else None,
        "deployments": {
            "strategy": plan.strategy,
            "candidates": [{"deployment": c.deployment.id, "score": round(c.score, 6), "reason": c.reason}
                           for c in plan.candidates],
            "excluded": [{"deployment": d, "reason": r} for d, r in plan.excluded],
        },
    }


def render_text(plan: RoutePlan) -> str:
    """The explanation for a terminal."""
    lines: list[str] = []
    d = plan.decision
    if d is not None:
        lines.append(f"router {d.router} → model {d.model}")
        for step in d.steps:
            lines.append(f"  {step.stage:<13} {step.outcome}")
        if d.scores:
            keys = sorted({k for v in d.scores.values() for k in v})
            lines.append("  " + f"{'model':<24}" + "".join(f"{k:>12}" for k in keys))
            for name in d.ranking + [m for m in d.scores if m not in d.ranking]:
                row = d.scores.get(name, {})
                lines.append("  " + f"{name:<24}" + "".join(
                    f"{row[k]:>12.6g}" if k in row else f"{'':>12}" for k in keys))
        if len(d.ranking) > 1:
            lines.append(f"  fallbacks     {', '.join(d.ranking[1:])}")
    else:
        lines.append(f"model {plan.public_model}")
    lines.append(f"deployments of {plan.public_model} ({plan.strategy}):")
    for i, c in enumerate(plan.candidates, 1):
        lines.append(f"  {i}. {c.deployment.id} — {c.reason}")
    for dep, why in plan.excluded:
        lines.append(f"  -  {dep} — set aside: {why}")
    return "\n".join(lines)
