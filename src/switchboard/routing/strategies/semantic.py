"""Semantic intent routes: send a request to the route whose example utterances it most resembles.

Pure: it works on vectors an :class:`~switchboard.routing.embeddings.Encoder` already computed (scaled to
unit length here, so a dot product is the cosine similarity, whatever the encoder); no I/O, no clock.
numpy is imported inside the functions, so importing this module costs nothing when no router has
semantic routes.

*Score.* A route's score for a query is its cosine similarity to the route's nearest example (with
``top_k`` > 1: the mean of the ``top_k`` nearest). An intent is a union of phrasings, so the query should
resemble *some* example, not their average: a centroid blurs distinct phrasings together. On a small
held-out set (three routes of 7–8 examples, 21 queries) the nearest example routed as well as the mean of
the best two or three and never worse, and it explains itself: the reason names that example.

*Thresholds.* Unless the user sets one, a route's threshold is fitted from the examples themselves
(:func:`fit_threshold`): leave-one-out scores of each example against the rest of its own route are the
positives, the route's scores of every other route's examples the negatives; the threshold is the one
with the best balanced accuracy (mean of the share of positives at or above it and of negatives below
it), and among equally good ones the middle of the widest gap. It is then clamped to
[:data:`THRESHOLD_FLOOR`, :data:`THRESHOLD_CEILING`]. With fewer than :data:`MIN_EXAMPLES_TO_FIT`
examples the positives say too little: the threshold is :data:`DEFAULT_THRESHOLD`, raised above the
highest negative if needed.

Usage::

    index = build_index(routes, encoder.encode(example_texts(routes)))
    m = match(index, encoder.encode([query_text(request.messages)])[0])
    target = m.route or default_route  # m.reason and m.scores go into the routing explanation
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise
from typing import TYPE_CHECKING, Literal

from switchboard.schemas.canonical import Message

if TYPE_CHECKING:
    import numpy as np
    from numpy.typing import NDArray

    Vectors = NDArray[np.float32]

__all__ = [
    "DEFAULT_THRESHOLD",
    "MIN_EXAMPLES_TO_FIT",
    "THRESHOLD_CEILING",
    "THRESHOLD_FLOOR",
    "RouteScore",
    "SemanticIndex",
    "SemanticMatch",
    "SemanticRoute",
    "ThresholdFit",
    "build_index",
    "example_texts",
    "fit_threshold",
    "match",
    "query_text",
]

#: A fitted threshold is never below this: unrelated English sentences score about 0–0.2 under MiniLM.
THRESHOLD_FLOOR = 0.25
#: Nor above this: near-duplicate examples would otherwise demand near-duplicate queries.
THRESHOLD_CEILING = 0.8
#: The threshold of a route with too few examples to fit one (close paraphrases score about 0.4–0.9).
DEFAULT_THRESHOLD = 0.4
#: A route needs this many examples for its leave-one-out scores to be worth fitting to.
MIN_EXAMPLES_TO_FIT = 3
#: How far above the highest negative a default threshold is raised.
_MARGIN = 0.05


@dataclass(frozen=True, slots=True)
class SemanticRoute:
    """An intent declared by example utterances; ``threshold`` (cosine, -1–1) is fitted when ``None``.

    Usage: ``SemanticRoute("billing", ("I was charged twice", "Update my card"), threshold=None)``
    """

    name: str
    examples: tuple[str, ...]
    threshold: float | None = None

    def __post_init__(self) -> None:
        if not self.examples:
            raise ValueError(f"route {self.name!r} needs at least one example")
        if self.threshold is not None and not -1.0 <= self.threshold <= 1.0:
            raise ValueError(f"route {self.name!r}: threshold must be within [-1, 1], got {self.threshold}")


@dataclass(frozen=True, slots=True)
class ThresholdFit:
    """A route's threshold, where it came from and why it has this value (for ``explain``)."""

    value: float
    source: Literal["user", "fitted", "default"]
    reason: str


@dataclass(frozen=True, slots=True)
class SemanticIndex:
    """Routes with their example vectors (one ``(examples, dim)`` matrix each) and thresholds.

    Build it with :func:`build_index`, once per configuration; it is read-only and shared by requests.
    """

    routes: tuple[SemanticRoute, ...]
    vectors: tuple[Vectors, ...]
    thresholds: tuple[ThresholdFit, ...]
    top_k: int = 1


@dataclass(frozen=True, slots=True)
class RouteScore:
    """How well the query matched one route, and the example closest to it."""

    route: str
    score: float
    threshold: float
    nearest_example: str
    nearest_similarity: float

    @property
    def cleared(self) -> bool:
        """Whether the score reaches the route's threshold."""
        return self.score >= self.threshold


@dataclass(frozen=True, slots=True)
class SemanticMatch:
    """The outcome of :func:`match`: the chosen route (``None``: the default applies), every route's score
    in declaration order, and a one-line reason."""

    route: str | None
    scores: tuple[RouteScore, ...]
    reason: str


def example_texts(routes: Sequence[SemanticRoute]) -> list[str]:
    """Every route's examples, route after route: encode these and pass the matrix to :func:`build_index`."""
    return [text for route in routes for text in route.examples]


def _route_score(sims: Vectors, top_k: int) -> Vectors:
    """Mean of the ``top_k`` largest similarities along the last axis."""
    import numpy as np

    k = min(top_k, sims.shape[-1])
    best: Vectors = np.partition(sims, sims.shape[-1] - k, axis=-1)[..., -k:]
    mean: Vectors = best.mean(axis=-1, dtype=np.float32)
    return mean


def fit_threshold(own: Vectors, others: Vectors, *, top_k: int = 1) -> ThresholdFit:
    """Fit one route's threshold from its example vectors ``own`` and other routes' example vectors ``others``.

    Usage: ``fit_threshold(index.vectors[0], np.concatenate(index.vectors[1:]))``
    """
    import numpy as np

    n = own.shape[0]
    negatives = _route_score(others @ own.T, top_k) if others.shape[0] else np.empty(0, dtype=np.float32)
    neg_max = float(negatives.max()) if negatives.size else None
    if n < MIN_EXAMPLES_TO_FIT:
        value = DEFAULT_THRESHOLD if neg_max is None else max(DEFAULT_THRESHOLD, neg_max + _MARGIN)
        value = _clamp(value)
        beat = "" if neg_max is None else f"; other routes' examples score at most {neg_max:.2f}"
        return ThresholdFit(value, "default", f"{n} example(s), too few to fit: default {value:.2f}{beat}")

    sims = own @ own.T
    np.fill_diagonal(sims, -np.inf)  # leave one out: an example does not vote for itself
    positives = np.asarray(_route_score(sims, min(top_k, n - 1)), dtype=np.float64)
    if not negatives.size:
        value = _clamp(min(DEFAULT_THRESHOLD, float(positives.min())))
        return ThresholdFit(value, "fitted", f"no other routes to separate from; own examples score ≥ "
                                             f"{positives.min():.2f} (leave-one-out): {value:.2f}")
    value = _best_separation(positives, np.asarray(negatives, dtype=np.float64))
    clamped = _clamp(value)
    note = "" if clamped == value else f" (best separation {value:.2f}, kept within [{THRESHOLD_FLOOR}, " \
                                       f"{THRESHOLD_CEILING}])"
    own_above = int((positives >= clamped).sum())
    others_below = int((negatives < clamped).sum())
    accuracy = (own_above / n + others_below / negatives.size) / 2
    return ThresholdFit(
        clamped, "fitted",
        f"{clamped:.2f} separates own examples (leave-one-out {positives.min():.2f}–{positives.max():.2f}, "
        f"{own_above}/{n} at or above) from other routes' ({negatives.min():.2f}–{negatives.max():.2f}, "
        f"{others_below}/{negatives.size} below); balanced accuracy {accuracy:.2f}{note}",
    )


def _best_separation(positives: NDArray[np.float64], negatives: NDArray[np.float64]) -> float:
    """The threshold with the best balanced accuracy; ties go to the middle of the widest gap between scores."""
    import numpy as np

    points = np.unique(np.concatenate([positives, negatives]))
    # Candidates: midpoints between consecutive distinct scores, plus one below and one above all of them.
    candidates = np.concatenate([[points[0] - 1e-6], (points[:-1] + points[1:]) / 2, [points[-1] + 1e-6]])
    gaps = np.concatenate([[0.0], np.diff(points), [0.0]])
    tpr = (positives[None, :] >= candidates[:, None]).mean(axis=1)
    tnr = (negatives[None, :] < candidates[:, None]).mean(axis=1)
    accuracy = (tpr + tnr) / 2
    best = np.flatnonzero(accuracy >= accuracy.max() - 1e-12)
    return float(candidates[best[np.argmax(gaps[best])]])


def _unit_rows(matrix: Vectors) -> Vectors:
    """Rows scaled to length 1 (zero rows stay zero): any encoder's vectors then compare by cosine."""
    import numpy as np

    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    unit: Vectors = matrix / np.maximum(norms, 1e-12)
    return unit


def _clamp(value: float) -> float:
    return min(max(value, THRESHOLD_FLOOR), THRESHOLD_CEILING)


def build_index(routes: Sequence[SemanticRoute], example_vectors: Vectors, *, top_k: int = 1) -> SemanticIndex:
    """Split the encoded examples (rows in :func:`example_texts` order) per route and settle each threshold:
    the user's when set, else fitted.

    Usage: ``build_index(routes, encoder.encode(example_texts(routes)))``
    """
    import numpy as np

    if top_k < 1:
        raise ValueError(f"top_k must be at least 1, got {top_k}")
    if not routes:
        raise ValueError("a semantic index needs at least one route")
    names = [r.name for r in routes]
    if len(set(names)) != len(names):
        raise ValueError(f"route names must be unique, got {names}")
    total = sum(len(r.examples) for r in routes)
    if example_vectors.ndim != 2 or example_vectors.shape[0] != total:
        raise ValueError(f"expected {total} example vectors (one per example), got shape {example_vectors.shape}")
    matrix = _unit_rows(np.asarray(example_vectors, dtype=np.float32))
    bounds = np.cumsum([0] + [len(r.examples) for r in routes])
    vectors = tuple(matrix[a:b].copy() for a, b in pairwise(bounds))
    for v in vectors:
        v.flags.writeable = False
    thresholds = []
    for i, route in enumerate(routes):
        if route.threshold is not None:
            thresholds.append(ThresholdFit(route.threshold, "user", f"set in configuration: {route.threshold:.2f}"))
            continue
        others = [v for j, v in enumerate(vectors) if j != i]
        rest = np.concatenate(others) if others else np.empty((0, matrix.shape[1]), dtype=np.float32)
        thresholds.append(fit_threshold(vectors[i], rest, top_k=top_k))
    return SemanticIndex(tuple(routes), vectors, tuple(thresholds), top_k)


def match(index: SemanticIndex, query: Vectors) -> SemanticMatch:
    """Score the query vector (shape ``(dim,)``) against every route; pick the highest-scoring
    route among those at or above their threshold (ties: the one declared first).

    Usage: ``m = match(index, encoder.encode([text])[0]); model = targets[m.route] if m.route else default``
    """
    import numpy as np

    query = _unit_rows(np.asarray(query, dtype=np.float32).reshape(1, -1))[0]
    scores = []
    for route, vectors, fit in zip(index.routes, index.vectors, index.thresholds, strict=True):
        sims = vectors @ query
        nearest = int(np.argmax(sims))
        scores.append(RouteScore(
            route=route.name, score=float(_route_score(sims, index.top_k)), threshold=fit.value,
            nearest_example=route.examples[nearest], nearest_similarity=float(sims[nearest]),
        ))
    ranked = sorted(scores, key=lambda s: s.score, reverse=True)  # stable: declaration order breaks ties
    winner = next((s for s in ranked if s.cleared), None)
    lead = winner or ranked[0]
    others = ", ".join(f"{s.route} {s.score:.2f}/{s.threshold:.2f}" for s in ranked if s is not lead)
    rest = f"; others (score/threshold): {others}" if others else ""
    if winner is None:
        return SemanticMatch(None, tuple(scores), f"no route reached its threshold (best {lead.route} "
                                                  f"{lead.score:.2f} < {lead.threshold:.2f}): default{rest}")
    return SemanticMatch(
        winner.route, tuple(scores),
        f"{winner.route} {winner.score:.2f} ≥ threshold {winner.threshold:.2f} (nearest example "
        f"{_quote(winner.nearest_example)} {winner.nearest_similarity:.2f}){rest}",
    )


def is_close_call(found: SemanticMatch, margin: float) -> bool:
    """Whether scores off by less than ``margin`` could have changed ``found``'s outcome: the winner barely
    cleared its threshold, another route came within ``margin`` of it (and of its own threshold), or — with
    no winner — a route came within ``margin`` of its threshold."""
    if found.route is None:
        return any(s.score > s.threshold - margin for s in found.scores)
    win = next(s for s in found.scores if s.route == found.route)
    return win.score - win.threshold < margin or any(
        s is not win and s.score > win.score - margin and s.score > s.threshold - margin for s in found.scores)


def _quote(text: str, limit: int = 60) -> str:
    return repr(text if len(text) <= limit else text[: limit - 1] + "…")


def query_text(messages: Sequence[Message], context_messages: int = 2, max_chars: int = 1000) -> str:
    """The text to embed for a request: the last user turn, then up to ``context_messages`` earlier user or
    assistant turns, most recent first, at most ``max_chars`` in all.

    The last user turn comes first because encoders truncate from the end: what is dropped is the oldest
    context, never the question. A last user turn longer than the budget keeps its head and its tail
    (instructions sit at either end of a pasted document). System prompts and tool results are left out:
    they repeat across requests or are data, not intent.

    Usage: ``encoder.encode([query_text(request.messages, context_messages=2)])``
    """
    if max_chars < 1:
        raise ValueError(f"max_chars must be at least 1, got {max_chars}")
    last_user = next((i for i in range(len(messages) - 1, -1, -1) if messages[i].role == "user"), None)
    if last_user is None:
        return ""
    parts = [_head_and_tail(messages[last_user].text().strip(), max_chars)]
    budget = max_chars - len(parts[0])
    taken = 0
    for message in reversed(messages[:last_user]):
        if taken >= context_messages or budget <= 1:
            break
        if message.role not in ("user", "assistant"):
            continue
        text = message.text().strip()
        if not text:
            continue
        taken += 1
        text = text[: budget - 1]  # one character for the separator
        parts.append(text)
        budget -= len(text) + 1
    return "\n".join(p for p in parts if p)


def _head_and_tail(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    if limit < 8:
        return text[:limit]
    head = (limit - 1) // 2
    tail = limit - 1 - head
    return text[:head] + "…" + text[len(text) - tail:]
