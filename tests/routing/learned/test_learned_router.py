"""The learned router: training routes each kind of prompt to the model that handles it, knobs are honoured,
and model files round-trip exactly and fail clearly when damaged."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from switchboard.eval.dataset import load_outcomes
from switchboard.routing.learned import (
    MaxCost,
    ModelFileError,
    QualityModel,
    QualityTarget,
    StrongShare,
    WillingnessToPay,
    calibrate_budget,
    calibrate_quality,
    calibrate_strong_share,
    choose,
    load,
    load_default,
)
from switchboard.routing.learned.features import FeatureConfig, extract, split_prompt
from switchboard.routing.learned.train import train
from tests.routing.learned.synthetic import write_synthetic


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> QualityModel:
    path = write_synthetic(tmp_path_factory.mktemp("data") / "train.jsonl")
    return train(load_outcomes([path]), seed=0)


def test_routes_maths_to_the_big_model_and_chat_to_the_small_one(trained: QualityModel) -> None:
    maths = trained.predict("Compute the eigenvalue of problem 99 and prove the theorem step.")
    chat = trained.predict("Tell me something nice about the coffee, friend 98, and the music.")
    assert maths["big"] > 0.8 and maths["small"] < 0.4
    assert chat["small"] > 0.7
    costs = trained.mean_costs
    assert choose(maths, costs, QualityTarget(0.7))[0] == "big"
    assert choose(chat, costs, QualityTarget(0.7))[0] == "small"


def test_quality_target_takes_the_cheapest_good_enough_model() -> None:
    preds, costs = {"a": 0.6, "b": 0.8, "c": 0.9}, {"a": 1.0, "b": 2.0, "c": 3.0}
    model, scores, reason = choose(preds, costs, QualityTarget(0.75))
    assert model == "b" and scores == preds and "≥ 0.75" in reason
    assert choose(preds, costs, QualityTarget(0.95))[0] == "c"  # none reaches it: best predicted


def test_max_cost_takes_the_best_model_within_the_cap() -> None:
    preds, costs = {"a": 0.6, "b": 0.8, "c": 0.9}, {"a": 1.0, "b": 2.0, "c": 3.0}
    assert choose(preds, costs, MaxCost(2.5))[0] == "b"
    assert choose(preds, costs, MaxCost(0.5))[0] == "a"  # nothing within: cheapest


def test_willingness_to_pay_trades_quality_for_cost() -> None:
    preds, costs = {"a": 0.6, "c": 0.9}, {"a": 1.0, "c": 3.0}
    assert choose(preds, costs, WillingnessToPay(1.0))[0] == "a"  # 0.6−1 > 0.9−3
    model, scores, _ = choose(preds, costs, WillingnessToPay(100.0))
    assert model == "c" and scores["c"] == pytest.approx(87.0)


def test_strong_share_threshold_and_its_calibration() -> None:
    knob = calibrate_strong_share([0.5, 0.1, -0.2, 0.3, 0.0], "s", "w", share=0.4)
    assert knob.threshold == pytest.approx(0.3)
    assert choose({"s": 0.9, "w": 0.5}, {}, knob)[0] == "s"
    assert choose({"s": 0.6, "w": 0.5}, {}, knob)[0] == "w"
    assert calibrate_strong_share([0.1, 0.1], "s", "w", share=0.5).threshold == float("inf")  # tie at the cut
    with pytest.raises(ValueError, match="not among"):
        choose({"s": 0.9}, {}, StrongShare("s", "w", 0.0))


def test_calibrate_quality_and_budget_on_constructed_data() -> None:
    preds = np.array([[0.9, 0.9], [0.2, 0.9]])
    scores = np.array([[1.0, 1.0], [0.0, 1.0]])
    costs = np.array([[1.0, 10.0], [1.0, 10.0]])
    quality = calibrate_quality(preds, scores, costs, target=1.0)
    assert choose({"a": 0.2, "b": 0.9}, {"a": 1.0, "b": 10.0}, quality)[0] == "b"
    assert choose({"a": 0.9, "b": 0.9}, {"a": 1.0, "b": 10.0}, quality)[0] == "a"
    budget = calibrate_budget(preds, costs, dollars_per_request=1.0)
    assert choose({"a": 0.2, "b": 0.9}, {"a": 1.0, "b": 10.0}, budget)[0] == "a"


def test_same_seed_same_bytes(tmp_path: Path) -> None:
    data = load_outcomes([write_synthetic(tmp_path / "d.jsonl")])
    train(data, seed=3).save(tmp_path / "one")
    train(data, seed=3).save(tmp_path / "two")
    for name in ("model.json", "weights.bin"):
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes()


def test_save_load_round_trip(trained: QualityModel, tmp_path: Path) -> None:
    trained.save(tmp_path / "m")
    again = load(tmp_path / "m")
    prompt = "Compute the prime of problem 7 and prove the matrix step."
    assert again.models == trained.models and again.costs == trained.costs
    assert again.predict(prompt) == trained.predict(prompt)
    assert again.with_costs({"big": 5.0}).mean_costs == {"big": 5.0, "small": trained.mean_costs["small"]}


def test_corrupt_or_unknown_model_files_fail_clearly(trained: QualityModel, tmp_path: Path) -> None:
    trained.save(tmp_path / "m")
    weights = tmp_path / "m" / "weights.bin"
    weights.write_bytes(weights.read_bytes()[:-2] + b"\x00\x01")
    with pytest.raises(ModelFileError, match="corrupt"):
        load(tmp_path / "m")
    trained.save(tmp_path / "v")
    meta = json.loads((tmp_path / "v" / "model.json").read_text(encoding="utf-8"))
    meta["version"] = 99
    (tmp_path / "v" / "model.json").write_text(json.dumps(meta), encoding="utf-8")
    with pytest.raises(ModelFileError, match="version 99"):
        load(tmp_path / "v")
    (tmp_path / "j").mkdir()
    (tmp_path / "j" / "model.json").write_text("{not json", encoding="utf-8")
    (tmp_path / "j" / "weights.bin").write_bytes(b"")
    with pytest.raises(ModelFileError, match="cannot read"):
        load(tmp_path / "j")
    with pytest.raises(ModelFileError, match=r"missing model\.json"):
        load(tmp_path / "nowhere")


def test_default_model_loads_and_predicts_every_model() -> None:
    qm = load_default()
    preds = qm.predict("Write a python function to check whether a number is prime.")
    assert len(preds) == 11 and all(0.0 <= p <= 1.0 for p in preds.values())
    assert qm.info["alpha"] in (1.0, 3.0, 10.0, 30.0)


def test_features_are_deterministic_and_split_off_the_last_question() -> None:
    prompt = "Q: one?\nAnswer: A\n\nQ: What is the capital of France, the country in Europe?\nAnswer:"
    context, question = split_prompt(prompt)
    assert context == "Q: one?\nAnswer: A" and question.startswith("Q: What is the capital")
    config = FeatureConfig()
    assert extract(prompt, config) == extract(prompt, config)
    assert extract("x" * 100_000, config)  # bounded work on huge input
