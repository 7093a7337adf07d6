"""Training the quality predictor: ridge regression from hashed prompt features to each model's score,
with the penalty chosen by grouped cross-validation on the training data. Needs numpy and scipy
(scipy comes with scikit-learn, the ``train`` extra).

Every model's scores are fitted jointly (one kernel, 11 outputs), so training is one linear solve per fold.
Missing outcomes (a JSONL line without a model) are imputed with that model's mean.

Usage::

    model = train(load_outcomes(["data/*_train.csv"]), seed=0, progress=TextProgress(sys.stderr))
    model.save("my-router")
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TextIO

from switchboard.eval.baselines import predictive
from switchboard.eval.dataset import DatasetError, OutcomeSet, require_numpy
from switchboard.eval.metrics import aiq, apgr, pair_curve, upper_hull
from switchboard.routing.learned.features import FeatureConfig, extract
from switchboard.routing.learned.model import QualityModel

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

__all__ = ["ALPHAS", "DEFAULT_PAIR", "TextProgress", "cross_validate", "default_pair", "train"]

#: The ridge penalties cross-validation chooses from.
ALPHAS: tuple[float, ...] = (1.0, 3.0, 10.0, 30.0)
#: The strong/weak pair of the APGR tie-break when both are in the data (RouteLLM's pair).
DEFAULT_PAIR = ("gpt-4-1106-preview", "mistralai/mixtral-8x7b-chat")
_FOLDS = 5

Progress = Callable[[int, int, str], None]


class TextProgress:
    """A plain-text progress bar on a stream (stderr): ``[#####-----] 3/20 fold 2 α=10``."""

    def __init__(self, stream: TextIO, width: int = 30) -> None:
        self.stream, self.width = stream, width

    def __call__(self, done: int, total: int, label: str) -> None:
        filled = self.width * done // max(1, total)
        self.stream.write(f"\r[{'#' * filled}{'-' * (self.width - filled)}] {done}/{total} {label:<28}")
        if done >= total:
            self.stream.write("\n")
        self.stream.flush()


@dataclass(frozen=True, slots=True)
class _Fold:
    train: npt.NDArray[np.intp]
    valid: npt.NDArray[np.intp]


def default_pair(data: OutcomeSet) -> tuple[str, str]:
    """RouteLLM's pair when present, else (the best-scoring model, the cheapest model)."""
    if all(m in data.models for m in DEFAULT_PAIR):
        return DEFAULT_PAIR
    np_ = require_numpy()
    strong = data.models[int(np_.nanargmax(np_.nanmean(data.scores, axis=0)))]
    weak = data.models[int(np_.nanargmin(np_.nanmean(data.costs, axis=0)))]
    return strong, weak


def _matrix(prompts: Sequence[str], config: FeatureConfig) -> Any:
    from scipy import sparse  # type: ignore[import-untyped]

    np_ = require_numpy()
    indptr: list[int] = [0]
    indices: list[int] = []
    values: list[float] = []
    for p in prompts:
        vec = extract(p, config)
        keys = sorted(vec)
        indices.extend(keys)
        values.extend(vec[k] for k in keys)
        indptr.append(len(indices))
    return sparse.csr_matrix(
        (np_.asarray(values, dtype=np_.float64), np_.asarray(indices, dtype=np_.int64), np_.asarray(indptr)),
        shape=(len(prompts), config.buckets),
    )


def _folds(groups: Sequence[str], seed: int, k: int) -> list[_Fold]:
    """Grouped k-fold: a group's rows share a fold; groups are assigned by a seeded CRC-32 shuffle."""
    np_ = require_numpy()
    uniq = sorted(set(groups), key=lambda g: (zlib.crc32(f"{seed}:{g}".encode()), g))
    fold_of = {g: i % k for i, g in enumerate(uniq)}
    assign = np_.asarray([fold_of[g] for g in groups])
    return [_Fold(np_.flatnonzero(assign != f), np_.flatnonzero(assign == f)) for f in range(k)]


def _targets(data: OutcomeSet) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    np_ = require_numpy()
    mean = np_.nanmean(data.scores, axis=0)
    filled = np_.where(np_.isnan(data.scores), mean[None, :], data.scores)
    return filled, mean


def _solve(kernel: npt.NDArray[np.float64], y: npt.NDArray[np.float64], alpha: float) -> npt.NDArray[np.float64]:
    np_ = require_numpy()
    result: npt.NDArray[np.float64] = np_.linalg.solve(kernel + alpha * np_.eye(len(kernel)), y)
    return result


def cross_validate(
    data: OutcomeSet, *, config: FeatureConfig, alphas: Sequence[float] = ALPHAS, seed: int = 0,
    pair: tuple[str, str] | None = None, progress: Progress | None = None,
) -> dict[float, tuple[float, float]]:
    """α → (AIQ, APGR) of out-of-fold predictions pooled over a grouped ``_FOLDS``-fold split of ``data``."""
    np_ = require_numpy()
    complete = data.complete()
    if len(complete) < 2 * _FOLDS:
        raise DatasetError(f"cross-validation needs at least {2 * _FOLDS} prompts with every model's outcome")
    x = _matrix(complete.prompts, config)
    kernel = (x @ x.T).toarray()
    y, _ = _targets(complete)
    folds = _folds(complete.groups, seed, _FOLDS)
    strong, weak = pair or default_pair(complete)
    results: dict[float, tuple[float, float]] = {}
    total, step = len(alphas) * len(folds), 0
    mean_cost = complete.costs.mean(axis=0)
    cheapest = int(mean_cost.argmin())
    floor = (float(mean_cost[cheapest]), float(complete.scores[:, cheapest].mean()))
    for alpha in alphas:
        oof = np_.zeros_like(y)
        for i, fold in enumerate(folds):
            mu = y[fold.train].mean(axis=0)
            a = _solve(kernel[np_.ix_(fold.train, fold.train)], y[fold.train] - mu, alpha)
            oof[fold.valid] = np_.clip(kernel[np_.ix_(fold.valid, fold.train)] @ a + mu, 0.0, 1.0)
            step += 1
            if progress:
                progress(step, total, f"cv fold {i + 1} alpha={alpha:g}")
        run = predictive("cv", complete, oof, mean_cost, strong=strong, weak=weak)
        hull = upper_hull([*run.points, floor])
        s, w = complete.scores[:, complete.models.index(strong)], complete.scores[:, complete.models.index(weak)]
        assert run.pair_scores is not None
        results[alpha] = (
            aiq(hull, float(mean_cost.min()), float(mean_cost.max())),
            apgr(pair_curve(run.pair_scores, s, w), float(s.mean()), float(w.mean())),
        )
    return results


def train(
    data: OutcomeSet, *, models: Sequence[str] | None = None, seed: int = 0, config: FeatureConfig | None = None,
    alphas: Sequence[float] = ALPHAS, progress: Progress | None = None,
) -> QualityModel:
    """Fit a :class:`QualityModel` on ``data`` (restricted to ``models`` if given), choosing the ridge penalty
    among ``alphas`` by grouped cross-validation (best AIQ, then APGR). Same data and seed → same model."""
    np_ = require_numpy()
    config = config or FeatureConfig()
    if models:
        data = data.select_models(models)
    keep = np_.flatnonzero(~np_.isnan(data.scores).all(axis=1))
    data = data.rows(keep)
    if len(data) < 2 * _FOLDS:
        raise DatasetError(f"training needs at least {2 * _FOLDS} prompts, got {len(data)}")
    pair = default_pair(data)
    if len(alphas) > 1:
        cv = cross_validate(data, config=config, alphas=alphas, seed=seed, pair=pair, progress=progress)
        alpha = max(alphas, key=lambda a: (round(cv[a][0], 4), cv[a][1]))
    else:
        cv, alpha = {}, alphas[0]
    x = _matrix(data.prompts, config)
    used = np_.unique(x.indices)
    x = x[:, used].tocsr()
    y, _ = _targets(data)
    mu = y.mean(axis=0)
    dual = _solve((x @ x.T).toarray(), y - mu, alpha)
    weights = np_.asarray(x.T @ dual)
    if progress:
        progress(1, 1, "final fit")
    costs = tuple(float(c) for c in np_.nanmean(data.costs, axis=0))
    info = {
        "trainer": "ridge on hashed n-grams (switchboard.routing.learned.train)",
        "alpha": alpha,
        "seed": seed,
        "prompts": len(data),
        "sources": sorted({src.replace("\\", "/").rsplit("/", 1)[-1] for src in data.sources}),
        "cv_pair": list(pair),
        "cv": {f"{a:g}": {"aiq": round(v[0], 5), "apgr": round(v[1], 5)} for a, v in cv.items()},
    }
    return QualityModel(
        models=data.models,
        costs=costs,
        features=config,
        buckets=used.astype(np_.int32),
        bias=mu.astype(np_.float32),
        weights=weights.astype(np_.float16),
        info=info,
    )
