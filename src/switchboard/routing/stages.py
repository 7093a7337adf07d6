"""The computing stages of a router, built from its configuration: semantic routes over an encoder (the
local MiniLM or an embeddings model of the gateway), the learned quality predictor and the feedback
bandit. Heavy parts (model weights, example embeddings) load on first use in a worker thread, or ahead of
traffic with :meth:`warm`.

Usage::

    router = build_router("auto", config.routers["auto"], config, gateway)
    await warm(router)
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from switchboard.config.model import Config
from switchboard.config.routers import BanditConfig, LearnedConfig, RouterConfig, SemanticConfig
from switchboard.errors import InvalidRequest
from switchboard.routing.router import Router, SemanticVerdict, StageChoice
from switchboard.schemas.canonical import EmbeddingRequest, Message

if TYPE_CHECKING:
    import numpy as np
    from numpy.typing import NDArray

    from switchboard.gateway import Gateway
    from switchboard.routing.bandit import Bandit, Feedback, Signal
    from switchboard.routing.embeddings import Encoder
    from switchboard.routing.learned import QualityModel
    from switchboard.routing.strategies.semantic import SemanticIndex

__all__ = ["EmbeddingSemantic", "FeedbackBandit", "LearnedQuality", "build_router", "warm"]

Embed = Callable[[list[str]], Awaitable["NDArray[np.float32]"]]

#: How many recent requests the ``strong_share`` knob calibrates on, and how many it needs first.
SHARE_WINDOW = 1000
SHARE_MIN_SAMPLES = 20


class EmbeddingSemantic:
    """Semantic routes: the index of example embeddings is built on first use (or by :meth:`warm`).

    With ``confirm`` (a second, more accurate encoder), a close call of the first one (see
    :func:`~switchboard.routing.strategies.semantic.is_close_call` and ``confirm_margin``) is decided again
    on the second encoder's own index.
    """

    def __init__(self, config: SemanticConfig, embed: Embed, confirm: Embed | None = None) -> None:
        self.config = config
        self._embed = embed
        self._confirm = confirm
        self._index: SemanticIndex | None = None
        self._confirm_index: SemanticIndex | None = None
        self._lock = asyncio.Lock()
        self._targets = {r.name: r.targets for r in config.routes}

    async def warm(self) -> SemanticIndex:
        """Embed the routes' examples and fit their thresholds (once), with the confirming encoder too."""
        if self._index is not None:
            return self._index
        async with self._lock:
            if self._index is None:
                if self._confirm is not None:
                    self._confirm_index = await self._build(self._confirm)
                self._index = await self._build(self._embed)
        return self._index

    async def _build(self, embed: Embed) -> SemanticIndex:
        from switchboard.routing.strategies.semantic import SemanticRoute, build_index, example_texts

        routes = [SemanticRoute(r.name, r.examples, r.threshold) for r in self.config.routes]
        vectors = await embed(example_texts(routes))
        return await asyncio.to_thread(build_index, routes, vectors)

    async def match(self, messages: Sequence[Message]) -> SemanticVerdict:
        """Embed the last user turn (with a little context) and match it against the routes."""
        from dataclasses import replace

        from switchboard.routing.strategies.semantic import is_close_call, match, query_text

        index = await self.warm()
        text = query_text(messages, self.config.context_messages)
        found = match(index, (await self._embed([text]))[0])
        margin = self.config.confirm_margin
        if self._confirm is not None and self._confirm_index is not None and margin is not None \
                and is_close_call(found, margin):
            first = found.route or "the default"
            found = match(self._confirm_index, (await self._confirm([text]))[0])
            found = replace(found, reason=f"{found.reason} (decided by minilm: {self.config.encoder} said {first}, "
                                          f"within {margin:g} of another outcome)")
        scores = {s.route: s.score for s in found.scores}
        thresholds = {s.route: s.threshold for s in found.scores}
        if found.route is not None:
            return SemanticVerdict(found.route, self._targets[found.route], scores, thresholds, found.reason)
        default = (self.config.default,) if self.config.default is not None else ()
        reason = found.reason + (f"; default route → {self.config.default}" if default else "")
        return SemanticVerdict(None, default, scores, thresholds, reason)


def _local_embed(build: Callable[[], Encoder], inline_chars: int = 0) -> Embed:
    """Embeddings from a local encoder, built in a worker thread on first use; texts of up to
    ``inline_chars`` characters in all are encoded on the event loop, the rest in a worker thread."""
    encoder: Encoder | None = None
    lock = asyncio.Lock()

    async def embed(texts: list[str]) -> NDArray[np.float32]:
        nonlocal encoder
        if encoder is None:
            async with lock:
                if encoder is None:
                    encoder = await asyncio.to_thread(build)
        if sum(map(len, texts)) <= inline_chars:
            return encoder.encode(texts)
        return await asyncio.to_thread(encoder.encode, texts)

    return embed


def minilm_embed(max_tokens: int) -> Embed:
    """Embeddings from the local all-MiniLM-L6-v2, computed in a worker thread (loaded on first use)."""

    def build() -> Encoder:
        from switchboard.routing.embeddings import CachedEncoder, MiniLMEncoder

        return CachedEncoder(MiniLMEncoder(max_tokens=max_tokens))

    return _local_embed(build)


def static_embed() -> Embed:
    """Embeddings from static token vectors distilled from all-MiniLM-L6-v2 (built or loaded on first use,
    in a worker thread). A query of up to a few thousand characters is encoded on the event loop (a
    fraction of a millisecond: less than a hop to a thread), longer batches in a worker thread."""

    def build() -> Encoder:
        from switchboard.routing.embeddings.static import StaticEncoder

        return StaticEncoder.from_minilm()

    return _local_embed(build, _INLINE_CHARS)


#: Texts up to this many characters in all are encoded by the static encoder on the event loop.
_INLINE_CHARS = 4000


def gateway_embed(gateway: Gateway, model: str) -> Embed:
    """Embeddings from an embeddings model of the gateway itself; each call is a recorded request."""

    async def embed(texts: list[str]) -> NDArray[np.float32]:
        import numpy as np

        from switchboard.gateway import RequestContext

        ctx = RequestContext.create(endpoint="embeddings", caller="switchboard-router")
        resp = await gateway.embed(EmbeddingRequest(model=model, inputs=list(texts)), ctx)
        vectors = np.asarray(resp.vectors, dtype=np.float32)
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        return (vectors / np.where(norms == 0, 1, norms)).astype(np.float32)

    return embed


class LearnedQuality:
    """The quality predictor with the router's knob; the model loads on first use (or :meth:`warm`).

    ``strong_share`` is calibrated on live traffic: the most expensive candidate gets a request when its
    predicted advantage over the best of the others is in the top ``strong_share`` of the last
    :data:`SHARE_WINDOW` requests' advantages (none before :data:`SHARE_MIN_SAMPLES` were seen, so the
    share is never exceeded while there is too little to go on).
    """

    def __init__(self, config: LearnedConfig) -> None:
        self.config = config
        self._model: QualityModel | None = None
        self._names = dict(config.names)
        self._margins: deque[float] = deque(maxlen=SHARE_WINDOW)

    @property
    def has_knob(self) -> bool:
        c = self.config
        return c.quality_target is not None or c.max_cost is not None or c.strong_share is not None

    def load(self) -> QualityModel:
        """Read the model (blocking; called from a worker thread or at start-up)."""
        if self._model is None:
            from switchboard.routing.learned import load, load_default

            self._model = load_default() if self.config.model == "default" else load(self.config.model)
        return self._model

    def predict(self, text: str, models: Sequence[str]) -> dict[str, float]:
        model = self.load()
        mapped = {m: self._names.get(m, m) for m in models}
        missing = [n for n in mapped.values() if n not in model.models]
        if missing:
            raise InvalidRequest(f"The learned router knows no model named {', '.join(missing)}; map the router's "
                                 "models to the predictor's with learned.names.")
        predicted = model.predict(text)
        return {m: float(predicted[n]) for m, n in mapped.items()}

    def choose(self, predictions: Mapping[str, float], costs: Mapping[str, float]) -> StageChoice:
        from switchboard.routing.learned import MaxCost, QualityTarget, choose

        c = self.config
        if c.quality_target is not None:
            model, scores, reason = choose(predictions, costs, QualityTarget(c.quality_target))
        elif c.max_cost is not None:
            model, scores, reason = choose(predictions, costs, MaxCost(c.max_cost))
        else:
            assert c.strong_share is not None
            return self._share(predictions, costs, c.strong_share)
        return StageChoice(model, dict(scores), reason)

    def _share(self, predictions: Mapping[str, float], costs: Mapping[str, float], share: float) -> StageChoice:
        names = list(predictions)
        strong = max(names, key=lambda m: (costs.get(m, 0.0), -names.index(m)))
        others = [m for m in names if m != strong]
        if not others:
            return StageChoice(strong, dict(predictions), f"{strong} is the only candidate")
        weak = max(others, key=lambda m: (predictions[m], -costs.get(m, 0.0)))
        margin = predictions[strong] - predictions[weak]
        self._margins.append(margin)
        if len(self._margins) < SHARE_MIN_SAMPLES:
            threshold = float("inf")
        else:
            ordered = sorted(self._margins, reverse=True)
            k = int(share * len(ordered))
            threshold = float("inf") if k == 0 else ordered[k - 1]
        pick = strong if margin >= threshold and margin > 0 else weak
        relation = "≥" if pick == strong else "<"
        return StageChoice(pick, {m: predictions[m] for m in names}, (
            f"P({strong}) − P({weak}) = {margin:+.3f} {relation} {threshold:+.3f}, the top {share:.0%} of recent "
            f"requests: {pick}"))


class FeedbackBandit:
    """The feedback bandit of one router, with its prompt clusterer, random source and clock."""

    def __init__(self, config: BanditConfig, *, rng: random.Random | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        from switchboard.routing.bandit import Bandit
        from switchboard.routing.bandit import BanditConfig as LearnerConfig
        from switchboard.routing.clusters import PromptClusterer

        self.config = config
        self.bandit: Bandit = Bandit(LearnerConfig(half_life=config.half_life, prior_strength=config.prior_strength,
                                                   cost_weight=config.cost_weight,
                                                   exploration_budget=config.exploration))
        self._clusterer = PromptClusterer(bits=config.cluster_bits)
        self._rng = rng or random.Random()
        self._clock = clock

    def state_key(self, router: str) -> str:
        """Where this router's bandit is saved; it names the clustering, so a change of clustering
        starts afresh instead of reading old clusters with a new meaning."""
        return f"bandit:{router}:{self._clusterer.signature}"

    def context(self, text: str, route: str | None) -> str:
        return self._clusterer.context(text, route=route)

    def choose(self, context: str, candidates: Sequence[str], costs: Mapping[str, float],
               prior: Mapping[str, float] | None) -> StageChoice:
        top = max(costs.values(), default=0.0)
        relative = {m: (costs[m] / top if top > 0 else 0.0) for m in candidates}
        pick = self.bandit.choose(context, candidates, relative, prior, now=self._clock(), draws=self._rng)
        return StageChoice(pick.model, dict(pick.means), pick.reason, pick.explored, pick.greedy)

    def observe(self, context: str, model: str, feedback: Feedback | Signal) -> float | None:
        """Learn from one piece of feedback on ``model`` in ``context``; returns the reward it counted."""
        return self.bandit.observe(context, model, feedback, self._clock())

    def restore(self, state: Mapping[str, Any]) -> None:
        """Continue from a saved state (see :meth:`Bandit.to_state`)."""
        from switchboard.routing.bandit import Bandit

        self.bandit = Bandit.from_state(state, self.bandit.config)


def build_router(name: str, rc: RouterConfig, config: Config, gateway: Gateway,
                 rng: random.Random | None = None) -> Router:
    """The router ``name`` with its stages; nothing heavy is loaded yet. ``rng`` drives the bandit's
    draws (seed it for reproducible replays)."""
    semantic = None
    if rc.semantic is not None:
        sem = rc.semantic
        confirm = None
        if sem.encoder == "minilm":
            embed = minilm_embed(sem.max_tokens)
        elif sem.encoder == "minilm-static":
            embed = static_embed()
            confirm = minilm_embed(sem.max_tokens) if sem.confirm_margin is not None else None
        else:
            embed = gateway_embed(gateway, sem.encoder)
        semantic = EmbeddingSemantic(sem, embed, confirm)
    learned = LearnedQuality(rc.learned) if rc.learned is not None else None
    bandit = FeedbackBandit(rc.bandit, rng=rng) if rc.bandit is not None and rc.bandit.enabled else None
    return Router(name, rc, config.models, semantic=semantic, learned=learned, bandit=bandit)


async def warm(router: Router) -> None:
    """Load what the router's stages need before the first request (weights, example embeddings)."""
    if isinstance(router.semantic, EmbeddingSemantic):
        await router.semantic.warm()
    if isinstance(router.learned, LearnedQuality):
        await asyncio.to_thread(router.learned.load)
