"""Rules: conditions on who asks, how and what, each sending matching requests to a model (or narrowing
the candidates). The first rule whose conditions all hold wins.

Usage::

    rules = compile_rules(router_config.rules)
    hit = first_match(features, rules)   # RuleMatch(index, rule, reason) or None
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from switchboard.config.routers import RuleConditions, RuleConfig
from switchboard.routing.features import RequestFeatures

__all__ = ["CompiledRule", "RuleMatch", "compile_rules", "first_match", "unmet"]


@dataclass(frozen=True, slots=True)
class CompiledRule:
    """A rule with its regular expression compiled once."""

    config: RuleConfig
    pattern: re.Pattern[str] | None

    @property
    def label(self) -> str:
        """How explanations name the rule."""
        return self.config.name or "unnamed"


@dataclass(frozen=True, slots=True)
class RuleMatch:
    """The rule that matched (0-based ``index``) and the conditions it checked."""

    index: int
    rule: CompiledRule
    reason: str


def compile_rules(rules: Sequence[RuleConfig]) -> tuple[CompiledRule, ...]:
    """Compile the rules' regular expressions (already validated by the config loader)."""
    return tuple(CompiledRule(r, re.compile(r.when.last_user) if r.when.last_user else None) for r in rules)


def unmet(features: RequestFeatures, when: RuleConditions, pattern: re.Pattern[str] | None) -> str | None:
    """The first condition of ``when`` that ``features`` fails, or ``None`` when all hold."""
    if when.model and features.requested not in when.model:
        return "model"
    if when.caller and features.caller not in when.caller:
        return "caller"
    if when.team and features.team not in when.team:
        return "team"
    if when.tags and not features.tags.intersection(when.tags):
        return "tags"
    for key, value in when.metadata.items():
        if features.metadata.get(key) != value:
            return f"metadata.{key}"
    for name, value in when.headers.items():
        got = features.headers.get(name)
        if got is None or (value != "*" and got != value):
            return f"headers.{name}"
    if when.min_prompt_tokens is not None and features.prompt_tokens < when.min_prompt_tokens:
        return "min_prompt_tokens"
    if when.max_prompt_tokens is not None and features.prompt_tokens > when.max_prompt_tokens:
        return "max_prompt_tokens"
    if when.tools is not None and features.needs_tools != when.tools:
        return "tools"
    if when.images is not None and features.needs_vision != when.images:
        return "images"
    if when.json_mode is not None and features.needs_json != when.json_mode:
        return "json"
    if pattern is not None and pattern.search(features.last_user) is None:
        return "last_user"
    return None


def first_match(features: RequestFeatures, rules: Sequence[CompiledRule]) -> RuleMatch | None:
    """The first rule whose conditions all hold, with a reason naming what it checked."""
    for i, rule in enumerate(rules):
        if unmet(features, rule.config.when, rule.pattern) is None:
            checked = ", ".join(sorted(rule.config.when.model_dump(exclude_defaults=True, by_alias=True))) or "always"
            return RuleMatch(i, rule, f"rule {i + 1} ({rule.label}) matched on {checked}")
    return None
