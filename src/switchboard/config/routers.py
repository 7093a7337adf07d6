"""Configuration of routers: public names that pick, per request, which model answers.

A router lists candidate models and the stages that choose among them — rules, semantic routes, a learned
quality predictor, a multi-objective score and a feedback bandit. Each stage may pick one model or narrow
the candidates for the next; capability filters always apply first.

Usage::

    routers:
      auto:
        models: [strong, cheap]
        rules:
          - when: {tools: true}
            model: strong
        learned: {quality_target: 0.8}
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

__all__ = [
    "BalanceStrategy",
    "BanditConfig",
    "LearnedConfig",
    "ObjectiveConfig",
    "RouterConfig",
    "RuleConditions",
    "RuleConfig",
    "SemanticConfig",
    "SemanticRouteConfig",
]

#: How a model spreads its requests over its deployments.
BalanceStrategy = Literal["weighted", "round_robin", "least_inflight", "latency", "cost"]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)


class _Target(_Frozen):
    """Where a matched stage sends the request: one ``model``, or a narrower set of ``models`` for the
    later stages to choose from."""

    model: str | None = None
    models: tuple[str, ...] = ()

    @model_validator(mode="after")
    def _one_target(self) -> _Target:
        if (self.model is None) == (not self.models):
            raise ValueError("give exactly one of 'model' or 'models'")
        return self

    @property
    def targets(self) -> tuple[str, ...]:
        """The models this target names."""
        return (self.model,) if self.model is not None else self.models


class RuleConditions(_Frozen):
    """Conditions of a rule; all that are given must hold. Lists match any of their values.

    ``model`` is the name the client asked for (the router or one of its aliases); ``caller`` the
    ``user`` of the request; ``team`` and ``tags`` come from the request metadata (``team``, and ``tags``
    as a comma-separated list) or the ``x-switchboard-tags`` header; ``headers`` maps a header name to
    the value it must have (``"*"``: present at all); ``last_user`` is a regular expression searched in
    the last user message.
    """

    model: tuple[str, ...] = ()
    caller: tuple[str, ...] = ()
    team: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    metadata: dict[str, str] = Field(default_factory=dict)
    headers: dict[str, str] = Field(default_factory=dict)
    min_prompt_tokens: int | None = Field(None, ge=0)
    max_prompt_tokens: int | None = Field(None, ge=0)
    tools: bool | None = None
    images: bool | None = None
    json_mode: bool | None = Field(None, alias="json")
    last_user: str | None = None

    @field_validator("model", "caller", "team", "tags", mode="before")
    @classmethod
    def _one_or_many(cls, value: object) -> object:
        return (value,) if isinstance(value, str) else value

    @field_validator("headers")
    @classmethod
    def _lower_names(cls, value: dict[str, str]) -> dict[str, str]:
        return {k.lower(): v for k, v in value.items()}

    @field_validator("last_user")
    @classmethod
    def _compiles(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"not a valid regular expression: {exc}") from None
        return value


class RuleConfig(_Target):
    """When every condition holds, the request goes to ``model`` (or is narrowed to ``models``)."""

    name: str | None = None
    when: RuleConditions


class SemanticRouteConfig(_Target):
    """An intent, declared by example utterances. ``threshold`` (cosine similarity) is fitted from the
    examples when not given."""

    name: str
    examples: tuple[str, ...] = Field(min_length=1)
    threshold: float | None = Field(None, ge=-1, le=1)


class SemanticConfig(_Frozen):
    """Semantic intent routes. ``encoder`` is ``minilm`` (the local all-MiniLM-L6-v2), ``minilm-static``
    (static token vectors distilled from it: under a millisecond, less accurate) or the name of an
    embeddings model of this configuration. With ``minilm-static``, ``confirm_margin`` sends close calls —
    where scores off by less than the margin could change the outcome — to MiniLM for the final word.
    Below every threshold the request goes to ``default`` — a model, or (when unset) all candidates, for
    the later stages to choose from."""

    encoder: str = "minilm"
    max_tokens: int = Field(128, ge=8, le=256)
    context_messages: int = Field(2, ge=0, le=20)
    routes: tuple[SemanticRouteConfig, ...] = Field(min_length=1)
    default: str | None = None
    confirm_margin: float | None = Field(None, gt=0, le=2)

    @model_validator(mode="after")
    def _confirm_needs_static(self) -> SemanticConfig:
        if self.confirm_margin is not None and self.encoder != "minilm-static":
            raise ValueError("confirm_margin applies to encoder: minilm-static (close calls go to minilm)")
        return self


class LearnedConfig(_Frozen):
    """The learned quality predictor. ``model`` is ``default`` (the one shipped with Switchboard) or the
    directory of one trained with ``switchboard router train``. ``names`` maps this configuration's
    model names to the predictor's (unmapped names are used as they are).

    The knob, at most one of: ``quality_target`` (the cheapest model predicted to reach it),
    ``max_cost`` (dollars per request) or ``strong_share`` (at most this fraction of traffic to the most
    expensive model). With none, the objective's weights decide.
    """

    model: str = "default"
    names: dict[str, str] = Field(default_factory=dict)
    quality_target: float | None = Field(None, ge=0, le=1)
    max_cost: float | None = Field(None, gt=0)
    strong_share: float | None = Field(None, ge=0, le=1)

    @model_validator(mode="after")
    def _one_knob(self) -> LearnedConfig:
        knobs = [k for k in ("quality_target", "max_cost", "strong_share") if getattr(self, k) is not None]
        if len(knobs) > 1:
            raise ValueError(f"give at most one of quality_target, max_cost, strong_share (got {', '.join(knobs)})")
        return self


class ObjectiveConfig(_Frozen):
    """Weights of the multi-objective score: quality (0–1) minus cost and latency, each normalised to
    0–1 across the candidates."""

    quality: float = Field(1.0, ge=0)
    cost: float = Field(0.0, ge=0)
    latency: float = Field(0.0, ge=0)


class BanditConfig(_Frozen):
    """Learning from feedback: a bandit over prompt clusters × models.

    ``exploration`` bounds the share of requests that may try a model other than the best-known one;
    ``half_life`` (seconds) is how fast old evidence fades so the router follows drift;
    ``prior_strength`` is how many feedback events the predicted quality is worth.
    """

    enabled: bool = True
    exploration: float = Field(0.05, ge=0, le=1)
    half_life: float = Field(7 * 86400.0, gt=0)
    prior_strength: float = Field(10.0, ge=0)
    cost_weight: float = Field(0.0, ge=0)
    cluster_bits: int = Field(4, ge=0, le=10)


class RouterConfig(_Frozen):
    """A public name that routes each request to one of ``models``.

    The stages run in this order: capability filter, ``rules`` (first match wins), ``semantic`` routes,
    then the score of the remaining candidates — predicted quality from ``learned`` (or the static
    ``quality`` of each model), cost and latency weighed by ``objective`` — and the ``bandit``. With
    ``fallback`` the other candidates, best first, back up the chosen model.
    """

    description: str | None = None
    aliases: tuple[str, ...] = ()
    models: tuple[str, ...] = Field(min_length=1)
    rules: tuple[RuleConfig, ...] = ()
    semantic: SemanticConfig | None = None
    learned: LearnedConfig | None = None
    quality: dict[str, float] = Field(default_factory=dict)
    objective: ObjectiveConfig = Field(default_factory=ObjectiveConfig)
    bandit: BanditConfig | None = None
    fallback: bool = True
    expected_output_tokens: int = Field(256, ge=1)
    guardrails: tuple[str, ...] = ()

    @field_validator("quality")
    @classmethod
    def _quality_range(cls, value: dict[str, float]) -> dict[str, float]:
        bad = [k for k, v in value.items() if not 0 <= v <= 1]
        if bad:
            raise ValueError(f"quality must be between 0 and 1 (check {', '.join(bad)})")
        return value
