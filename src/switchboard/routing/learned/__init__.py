"""The learned quality router: predicts, per prompt, how likely each model is to answer well, and picks a
model by a cost–quality knob. Inference needs numpy (the ``routing`` extra); training needs the ``train`` extra.

Usage::

    from switchboard.routing.learned import QualityTarget, choose, load_default

    qm = load_default()
    model, scores, reason = choose(qm.predict(prompt), qm.mean_costs, QualityTarget(0.8))
"""

from __future__ import annotations

from pathlib import Path

from switchboard.routing.learned.choose import (
    Knob,
    MaxCost,
    QualityTarget,
    StrongShare,
    WillingnessToPay,
    calibrate_budget,
    calibrate_quality,
    calibrate_strong_share,
    choose,
)
from switchboard.routing.learned.model import ModelFileError, QualityModel

__all__ = [
    "DEFAULT_MODEL_DIR",
    "Knob",
    "MaxCost",
    "ModelFileError",
    "QualityModel",
    "QualityTarget",
    "StrongShare",
    "WillingnessToPay",
    "calibrate_budget",
    "calibrate_quality",
    "calibrate_strong_share",
    "choose",
    "load",
    "load_default",
]

#: Where the shipped model lives (trained on the RouterBench subset; see docs/routing.md).
DEFAULT_MODEL_DIR = Path(__file__).parent / "default"


def load(path: str | Path) -> QualityModel:
    """Load a model directory written by ``switchboard router train``."""
    return QualityModel.load(path)


def load_default() -> QualityModel:
    """Load the shipped default model."""
    return QualityModel.load(DEFAULT_MODEL_DIR)
