"""The quality predictor: for a prompt, P(model j answers well) for each of N models.

A linear model over the hashed features of :mod:`.features` (one weight row per hash bucket seen in training,
one column per model), plus the mean dollar cost of each model on the training data. Inference needs numpy
only (the ``routing`` extra), never scikit-learn.

On disk a model is a directory with ``model.json`` (format name and version, models, costs, feature
config, how it was trained, and the SHA-256 of the weights) and ``weights.bin`` (little-endian int32 bucket
ids, then float32 biases, then float16 weights, bucket-major). Loading checks all of it.

Usage::

    model = QualityModel.load("src/switchboard/routing/learned/default")
    model.predict("Write a python function to reverse a list.")  # {"gpt-4-1106-preview": 0.71, ...}
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from switchboard.routing.learned.features import FeatureConfig, extract

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

__all__ = ["FORMAT", "FORMAT_VERSION", "ModelFileError", "QualityModel"]

FORMAT = "switchboard-quality-model"
FORMAT_VERSION = 1
_META = "model.json"
_WEIGHTS = "weights.bin"


class ModelFileError(ValueError):
    """A model directory is missing, corrupt or of an unknown format/version."""


def _numpy() -> Any:
    try:
        import numpy
    except ImportError:  # pragma: no cover - numpy is installed in the test environment
        raise ImportError("the learned router needs numpy: pip install 'switchboard[routing]'") from None
    return numpy


@dataclass(frozen=True, eq=False)
class QualityModel:
    """Predicts per-model quality for a prompt; carries the models' mean training cost for routing."""

    models: tuple[str, ...]
    #: Mean dollar cost per request of each model on the training data (same order as ``models``).
    costs: tuple[float, ...]
    features: FeatureConfig
    buckets: npt.NDArray[np.int32]
    bias: npt.NDArray[np.float32]
    weights: npt.NDArray[np.float16]
    #: How it was trained (data, chosen hyper-parameters, cross-validation scores); informational.
    info: dict[str, Any] = field(default_factory=dict)
    _row: dict[int, int] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if not self._row:
            self._row.update({int(b): i for i, b in enumerate(self.buckets.tolist())})

    @property
    def mean_costs(self) -> dict[str, float]:
        """Model → mean training cost in dollars (the default costs for :func:`~.choose.choose`)."""
        return dict(zip(self.models, self.costs, strict=True))

    def predict_array(self, prompt: str) -> npt.NDArray[np.float64]:
        """Predicted quality of each model (order of ``models``), clipped to [0, 1]."""
        np_ = _numpy()
        vec = extract(prompt, self.features)
        rows, vals = [], []
        for b, v in vec.items():
            r = self._row.get(b)
            if r is not None:
                rows.append(r)
                vals.append(v)
        out = self.bias.astype(np_.float64)
        if rows:
            out = out + np_.asarray(vals) @ self.weights[rows].astype(np_.float64)
        result: npt.NDArray[np.float64] = np_.clip(out, 0.0, 1.0)
        return result

    def predict(self, prompt: str) -> dict[str, float]:
        """Model → predicted probability that it answers ``prompt`` well."""
        return dict(zip(self.models, (float(p) for p in self.predict_array(prompt)), strict=True))

    def predict_many(self, prompts: Sequence[str]) -> npt.NDArray[np.float64]:
        """Predictions for many prompts, shape (len(prompts), len(models))."""
        np_ = _numpy()
        if not prompts:
            empty: npt.NDArray[np.float64] = np_.zeros((0, len(self.models)))
            return empty
        stacked: npt.NDArray[np.float64] = np_.stack([self.predict_array(p) for p in prompts])
        return stacked

    def save(self, directory: str | Path) -> None:
        """Write ``model.json`` and ``weights.bin`` into ``directory`` (created if needed); byte-reproducible."""
        np_ = _numpy()
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        blob = (
            np_.asarray(self.buckets, dtype="<i4").tobytes()
            + np_.asarray(self.bias, dtype="<f4").tobytes()
            + np_.asarray(self.weights, dtype="<f2").tobytes()
        )
        meta = {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "models": list(self.models),
            "costs": [float(c) for c in self.costs],
            "features": self.features.to_json(),
            "rows": len(self.buckets),
            "weights_sha256": hashlib.sha256(blob).hexdigest(),
            "info": self.info,
        }
        (out / _WEIGHTS).write_bytes(blob)
        (out / _META).write_text(json.dumps(meta, indent=1, sort_keys=True) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, directory: str | Path) -> QualityModel:
        """Read a model saved by :meth:`save`; :class:`ModelFileError` if it is missing, corrupt or unknown."""
        np_ = _numpy()
        src = Path(directory)
        try:
            meta = json.loads((src / _META).read_text(encoding="utf-8"))
            blob = (src / _WEIGHTS).read_bytes()
        except FileNotFoundError as exc:
            raise ModelFileError(f"{src}: not a router model directory (missing {Path(exc.filename).name})") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ModelFileError(f"{src}: cannot read the router model: {exc}") from None
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            raise ModelFileError(f"{src}: {_META} is not a switchboard router model")
        if meta.get("version") != FORMAT_VERSION:
            raise ModelFileError(
                f"{src}: router model format version {meta.get('version')!r} is not supported "
                f"(this switchboard reads version {FORMAT_VERSION}); retrain it with `switchboard router train`"
            )
        if hashlib.sha256(blob).hexdigest() != meta.get("weights_sha256"):
            raise ModelFileError(f"{src}: {_WEIGHTS} is corrupt (its checksum does not match {_META})")
        try:
            models = tuple(str(m) for m in meta["models"])
            costs = tuple(float(c) for c in meta["costs"])
            features = FeatureConfig.from_json(meta["features"])
            rows = int(meta["rows"])
            m = len(models)
            if len(costs) != m or len(blob) != rows * 4 + m * 4 + rows * m * 2:
                raise ValueError("sizes do not add up")
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            raise ModelFileError(f"{src}: {_META} is malformed: {exc}") from None
        buckets = np_.frombuffer(blob, dtype="<i4", count=rows)
        bias = np_.frombuffer(blob, dtype="<f4", count=m, offset=rows * 4)
        weights = np_.frombuffer(blob, dtype="<f2", count=rows * m, offset=rows * 4 + m * 4).reshape(rows, m)
        info: dict[str, Any] = meta["info"] if isinstance(meta.get("info"), dict) else {}
        return cls(models, costs, features, buckets, bias, weights, info)

    def with_costs(self, costs: Mapping[str, float]) -> QualityModel:
        """The same model with some models' expected costs replaced (e.g. the gateway's configured prices)."""
        merged = tuple(float(costs.get(m, c)) for m, c in zip(self.models, self.costs, strict=True))
        return QualityModel(self.models, merged, self.features, self.buckets, self.bias, self.weights, self.info,
                            self._row)
