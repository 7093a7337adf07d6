"""Which deployments of a model may take a request at all: the filters every balancing strategy applies
before it orders what is left.

Usage::

    eligible, excluded = eligible_deployments(features, model.deployments, view)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from switchboard.config.model import DeploymentConfig
from switchboard.execution.live import StatsSnapshot
from switchboard.routing.features import RequestFeatures

__all__ = ["AT_LIMIT", "UNAVAILABLE", "BalanceView", "capability_gaps", "eligible_deployments", "over_limit"]

#: The exclusion reason of a deployment whose breaker is open or that is cooling down.
UNAVAILABLE = "unavailable (circuit open or cooling down)"
#: The exclusion reason prefix of a deployment at its provider's per-minute limits.
AT_LIMIT = "at its per-minute limit"


@dataclass(frozen=True, slots=True)
class BalanceView:
    """The live facts a balancing strategy may read, as a snapshot: random draws (one per deployment),
    the health snapshot (deployment id → when it may take traffic again), live statistics by deployment
    id, a turn counter for round robin and the answer length to expect for cost and time estimates."""

    draws: Sequence[float] = ()
    unavailable: Mapping[str, float] = field(default_factory=dict)
    stats: Mapping[str, StatsSnapshot] = field(default_factory=dict)
    turn: int = 0
    expected_output_tokens: int = 256


def capability_gaps(features: RequestFeatures, deployment: DeploymentConfig) -> list[str]:
    """The capabilities the request needs that ``deployment`` lacks (its context window included)."""
    caps = deployment.capabilities
    gaps = []
    if features.needs_tools and not caps.tools:
        gaps.append("tools")
    if features.needs_vision and not caps.vision:
        gaps.append("vision")
    if features.needs_json and not caps.json_mode:
        gaps.append("json")
    return gaps


def over_limit(features: RequestFeatures, deployment: DeploymentConfig, stats: StatsSnapshot | None) -> str | None:
    """Why ``deployment`` would pass its RPM or TPM limit by taking this request, or ``None``."""
    if stats is None or (deployment.rpm is None and deployment.tpm is None):
        return None
    if deployment.rpm is not None and stats.requests_last_minute >= deployment.rpm:
        return f"{AT_LIMIT} ({stats.requests_last_minute}/{deployment.rpm} requests)"
    if deployment.tpm is not None and stats.tokens_last_minute + features.prompt_tokens > deployment.tpm:
        return f"{AT_LIMIT} ({stats.tokens_last_minute}+{features.prompt_tokens}/{deployment.tpm} tokens)"
    return None


def eligible_deployments(
    features: RequestFeatures, deployments: Sequence[DeploymentConfig], view: BalanceView,
) -> tuple[list[tuple[int, DeploymentConfig]], list[tuple[str, str]]]:
    """``(index, deployment)`` of those that can serve the request now, and ``(id, reason)`` of the rest."""
    eligible: list[tuple[int, DeploymentConfig]] = []
    excluded: list[tuple[str, str]] = []
    for i, dep in enumerate(deployments):
        gaps = capability_gaps(features, dep)
        if gaps:
            excluded.append((dep.id, "lacks " + ", ".join(gaps)))
        elif dep.id in view.unavailable:
            excluded.append((dep.id, UNAVAILABLE))
        elif (why := over_limit(features, dep, view.stats.get(dep.id))) is not None:
            excluded.append((dep.id, why))
        else:
            eligible.append((i, dep))
    return eligible, excluded
