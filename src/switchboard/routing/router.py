"""A router: the public name that chooses, per request, which of its models answers.

It runs the stages of its configuration in order — capability filter, rules, semantic routes, the score
(predicted quality, cost, latency) and the feedback bandit — each stage either choosing a model or
narrowing the candidates for the next, and returns a :class:`RouteDecision` that explains itself. The
stages that compute (embeddings, the quality predictor) come in as small objects so that the decision
logic stays testable; they run off the event loop.

Usage::

    router = Router("auto", config.routers["auto"], config.models, semantic=..., learned=..., bandit=...)
    decision = await router.decide(features, request.messages, live)
    decision.model, decision.ranking, decision.to_dict()
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from switchboard.config.model import ModelConfig
from switchboard.config.routers import RouterConfig
from switchboard.errors import InvalidRequest
from switchboard.execution.live import StatsSnapshot
from switchboard.routing.eligibility import capability_gaps
from switchboard.routing.features import RequestFeatures, prompt_text
from switchboard.routing.plan import RouteDecision, Step
from switchboard.routing.strategies import objective
from switchboard.routing.strategies.cost import expected_cost
from switchboard.routing.strategies.latency import expected_seconds
from switchboard.routing.strategies.rules import compile_rules, first_match
from switchboard.schemas.canonical import Message

__all__ = ["BanditStage", "LearnedStage", "Router", "SemanticStage", "SemanticVerdict", "StageChoice"]

#: Texts up to this many characters are scored on the event loop; longer ones in a worker thread.
INLINE_CHARS = 2_000


@dataclass(frozen=True, slots=True)
class SemanticVerdict:
    """What the semantic stage found: the route (``None``: below every threshold), the models it sends
    to, every route's score and threshold, and a sentence for people."""

    route: str | None
    targets: tuple[str, ...]
    scores: dict[str, float]
    thresholds: dict[str, float]
    reason: str


@dataclass(frozen=True, slots=True)
class StageChoice:
    """A model chosen by a stage, the per-model numbers behind it and why."""

    model: str
    scores: dict[str, float]
    reason: str
    explored: bool = False
    greedy: str | None = None


class SemanticStage(Protocol):
    """Matches the request's conversation against the semantic routes."""

    async def match(self, messages: Sequence[Message]) -> SemanticVerdict: ...


class LearnedStage(Protocol):
    """Predicts each model's chance of answering well, and picks by the configured knob."""

    @property
    def has_knob(self) -> bool: ...

    def predict(self, text: str, models: Sequence[str]) -> dict[str, float]: ...

    def choose(self, predictions: Mapping[str, float], costs: Mapping[str, float]) -> StageChoice: ...


class BanditStage(Protocol):
    """Learns from feedback which model serves a prompt cluster best."""

    def context(self, text: str, route: str | None) -> str: ...

    def choose(self, context: str, candidates: Sequence[str], costs: Mapping[str, float],
               prior: Mapping[str, float] | None) -> StageChoice: ...


class Router:
    """One configured router; see the module docstring."""

    def __init__(self, name: str, config: RouterConfig, models: Mapping[str, ModelConfig], *,
                 semantic: SemanticStage | None = None, learned: LearnedStage | None = None,
                 bandit: BanditStage | None = None) -> None:
        self.name = name
        self.config = config
        self._models = {m: models[m] for m in config.models}
        self._rules = compile_rules(config.rules)
        self.semantic = semantic
        self.learned = learned
        self.bandit = bandit

    async def decide(self, features: RequestFeatures, messages: Sequence[Message],
                     live: Mapping[str, StatsSnapshot], unavailable: Mapping[str, float] | None = None,
                     ) -> RouteDecision:
        """Choose the model for one request. ``messages`` are read only by the stages that read text;
        ``live`` and ``unavailable`` are the live-statistics and health snapshots. Raises
        :class:`InvalidRequest` when no model of the router can serve the request."""
        steps: list[Step] = []
        candidates = self._capable(features, steps)
        candidates = self._healthy(candidates, unavailable or {}, steps)
        decided: str | None = None
        route: str | None = None
        hit = first_match(features, self._rules)
        if hit is not None:
            decided, candidates = self._narrow(candidates, hit.rule.config.targets, "rules", hit.reason, steps)
        elif self._rules:
            steps.append(Step("rules", f"no rule matched ({len(self._rules)} checked)"))
        if decided is None and self.semantic is not None:
            verdict = await self.semantic.match(messages)
            route = verdict.route
            detail: dict[str, object] = {"scores": _rounded(verdict.scores),
                                         "thresholds": _rounded(verdict.thresholds)}
            if verdict.targets:
                decided, candidates = self._narrow(candidates, verdict.targets, "semantic", verdict.reason, steps,
                                                   detail)
            else:
                steps.append(Step("semantic", verdict.reason, detail))
        costs = {m: self._cost(m, features) for m in candidates}
        scores: dict[str, dict[str, float]] = {m: {"cost": costs[m]} for m in candidates}
        context: str | None = None
        if decided is None and len(candidates) == 1:
            decided = candidates[0]
        if decided is None:
            prompt = prompt_text(list(messages)) if self.learned is not None or self.bandit is not None else ""
            decided, ranking = await self._score(candidates, costs, features, live, prompt, scores, steps)
            if self.bandit is not None:
                context = self.bandit.context(prompt, route)
                prior = {m: scores[m]["quality"] for m in candidates if "quality" in scores[m]} or None
                pick = self.bandit.choose(context, ranking, costs, prior)
                for m, v in pick.scores.items():
                    if m in scores:
                        scores[m]["bandit"] = v
                steps.append(Step("bandit", pick.reason, {"context": context, "explored": pick.explored,
                                                          "greedy": pick.greedy or pick.model}))
                decided = pick.model
        else:
            ranking = sorted(candidates, key=lambda m: (m != decided, costs[m]))
        ranking = [decided] + [m for m in ranking if m != decided]
        return RouteDecision(self.name, decided, ranking if self.config.fallback else [decided], steps,
                             {m: _rounded(v) for m, v in scores.items()}, context)

    # -- stages ------------------------------------------------------------------------------

    def _capable(self, features: RequestFeatures, steps: list[Step]) -> list[str]:
        kept: list[str] = []
        set_aside: dict[str, str] = {}
        for name, model in self._models.items():
            gaps = [capability_gaps(features, d) for d in model.deployments]
            windows = [d.context_window for d in model.deployments if d.context_window is not None]
            if all(gaps):
                set_aside[name] = "lacks " + ", ".join(sorted({g for dep_gaps in gaps for g in dep_gaps}))
            elif windows and len(windows) == len(model.deployments) and features.prompt_tokens > max(windows):
                set_aside[name] = f"prompt of ~{features.prompt_tokens} tokens exceeds its context window"
            else:
                kept.append(name)
        if set_aside:
            why = ", ".join(f"{m} ({r})" for m, r in set_aside.items())
            steps.append(Step("capabilities", f"set aside {why}", {"set_aside": set_aside}))
        if not kept:
            why = "; ".join(f"{m}: {r}" for m, r in set_aside.items())
            raise InvalidRequest(f"No model of router '{self.name}' can serve this request ({why}).",
                                 param="model", code="model_not_supported")
        return kept

    def _healthy(self, candidates: list[str], unavailable: Mapping[str, float], steps: list[Step]) -> list[str]:
        if not unavailable:
            return candidates
        down = [m for m in candidates if all(d.id in unavailable for d in self._models[m].deployments)]
        if not down or len(down) == len(candidates):
            return candidates  # with nothing healthy, the executor's own 503 is the honest answer
        steps.append(Step("health", f"set aside {', '.join(down)} (every deployment unavailable)"))
        return [m for m in candidates if m not in down]

    @staticmethod
    def _narrow(candidates: list[str], targets: Sequence[str], stage: str, reason: str, steps: list[Step],
                detail: dict[str, object] | None = None) -> tuple[str | None, list[str]]:
        usable = [t for t in targets if t in candidates]
        if not usable:
            steps.append(Step(stage, f"{reason}, but {', '.join(targets)} cannot serve this request; ignored",
                              detail or {}))
            return None, candidates
        if len(usable) == 1:
            steps.append(Step(stage, f"{reason} → {usable[0]}", detail or {}))
            return usable[0], candidates
        steps.append(Step(stage, f"{reason} → one of {', '.join(usable)}", detail or {}))
        return None, usable

    async def _score(self, candidates: list[str], costs: Mapping[str, float], features: RequestFeatures,
                     live: Mapping[str, StatsSnapshot], prompt: str, scores: dict[str, dict[str, float]],
                     steps: list[Step]) -> tuple[str, list[str]]:
        quality: dict[str, float] = {m: q for m, q in self.config.quality.items() if m in candidates}
        source = "configured quality" if quality else "no quality information"
        learned = self.learned
        if learned is not None:
            if len(prompt) <= INLINE_CHARS:
                quality = learned.predict(prompt, candidates)
            else:
                quality = await asyncio.to_thread(learned.predict, prompt, candidates)
            source = "learned quality prediction"
        facts = [objective.ModelFacts(m, quality.get(m), costs[m], self._latency(m, live)) for m in candidates]
        ranked = objective.rank(facts, self.config.objective)
        for r in ranked:
            scores[r.name].update({"quality": r.parts["quality"], "score": r.score})
            if quality.get(r.name) is None:
                del scores[r.name]["quality"]
        order = [r.name for r in ranked]
        if learned is not None and learned.has_knob:
            pick = learned.choose({m: quality[m] for m in candidates}, costs)
            steps.append(Step("learned", pick.reason))
            return pick.model, order
        w = self.config.objective
        steps.append(Step("objective", f"{order[0]} scores best ({source}; weights quality {w.quality:g}, "
                                       f"cost {w.cost:g}, latency {w.latency:g})"))
        return order[0], order

    # -- facts -------------------------------------------------------------------------------

    def _cost(self, name: str, features: RequestFeatures) -> float:
        """Expected dollars at the cheapest capable deployment of ``name``."""
        deps = [d for d in self._models[name].deployments if not capability_gaps(features, d)]
        out = self.config.expected_output_tokens
        return min(expected_cost(d, features.prompt_tokens, out) for d in deps or self._models[name].deployments)

    def _latency(self, name: str, live: Mapping[str, StatsSnapshot]) -> float | None:
        times = [t for d in self._models[name].deployments
                 if (t := expected_seconds(live.get(d.id), self.config.expected_output_tokens)) is not None]
        return min(times) if times else None


def _rounded(values: Mapping[str, float]) -> dict[str, float]:
    return {k: round(v, 6) for k, v in values.items()}
