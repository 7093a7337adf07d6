"""Semantic intent routes: held-out queries reach their route, off-topic ones the default, and every decision
explains itself."""

from __future__ import annotations

import math

import numpy as np
import pytest
from numpy.typing import NDArray

from switchboard.routing.embeddings import MiniLMEncoder
from switchboard.routing.strategies.semantic import (
    DEFAULT_THRESHOLD,
    THRESHOLD_FLOOR,
    RouteScore,
    SemanticIndex,
    SemanticMatch,
    SemanticRoute,
    build_index,
    example_texts,
    fit_threshold,
    is_close_call,
    match,
    query_text,
)
from switchboard.schemas.canonical import ImagePart, Message, TextPart

ROUTES = (
    SemanticRoute("billing", (
        "I was charged twice this month", "How do I update my credit card?",
        "Can I get a refund for my subscription?", "Why is my invoice higher than usual?",
        "Cancel my plan and stop billing me", "Where can I download my receipts?",
        "What payment methods do you accept?",
    )),
    SemanticRoute("coding", (
        "Write a Python function that reverses a linked list", "Why does my JavaScript code throw an error?",
        "Fix the bug in this code", "How do I sort a dictionary by value in Python?",
        "Explain this stack trace from my Java program", "Refactor this function to make it faster",
        "My program crashes with a null pointer exception", "Write a unit test for this class",
    )),
    SemanticRoute("smalltalk", (
        "Hi there, how are you today?", "Tell me a joke", "What's your favourite movie?",
        "Good morning! Hope you're well", "Thanks, you're awesome", "Do you like music?", "Nice to meet you",
    )),
)

HELD_OUT = {
    "billing": ["My card was billed two times for the same order", "Please refund my last payment",
                "How can I change the card you charge?"],
    "coding": ["My Python script crashes with a KeyError, how do I fix it?",
               "What's the difference between a list and a tuple in Python?"],
    "smalltalk": ["Hey, how's it going?", "Tell me something funny", "Thank you so much!"],
}
OFF_TOPIC = [
    "What's the weather in Paris?", "What is the capital of Australia?", "Recommend a hiking trail near Denver",
]


@pytest.fixture(scope="module")
def encoder() -> MiniLMEncoder:
    return MiniLMEncoder(max_tokens=128)


@pytest.fixture(scope="module")
def index(encoder: MiniLMEncoder) -> SemanticIndex:
    return build_index(ROUTES, encoder.encode(example_texts(ROUTES)))


def _query(encoder: MiniLMEncoder, text: str) -> NDArray[np.float32]:
    return encoder.encode([text])[0]


@pytest.mark.parametrize(("route", "text"), [(r, t) for r, texts in HELD_OUT.items() for t in texts])
def test_held_out_queries_reach_their_route(
    encoder: MiniLMEncoder, index: SemanticIndex, route: str, text: str,
) -> None:
    m = match(index, _query(encoder, text))
    assert m.route == route, m.reason
    assert m.reason.startswith(f"{route} ") and "nearest example" in m.reason


@pytest.mark.parametrize("text", OFF_TOPIC)
def test_off_topic_queries_fall_to_the_default(encoder: MiniLMEncoder, index: SemanticIndex, text: str) -> None:
    m = match(index, _query(encoder, text))
    assert m.route is None
    assert m.reason.startswith("no route reached its threshold") and "default" in m.reason


def test_match_reports_every_route_score_and_threshold(encoder: MiniLMEncoder, index: SemanticIndex) -> None:
    m = match(index, _query(encoder, "Please refund my last payment"))
    assert [s.route for s in m.scores] == ["billing", "coding", "smalltalk"]
    assert all(-1.0 <= s.score <= 1.0 and s.threshold == f.value for s, f in zip(m.scores, index.thresholds,
                                                                                  strict=True))
    billing = m.scores[0]
    assert billing.cleared and billing.nearest_example == "Can I get a refund for my subscription?"
    assert "coding" in m.reason and "smalltalk" in m.reason  # the losers' scores are in the explanation too


def test_fitted_thresholds_are_bounded_and_explain_themselves(index: SemanticIndex) -> None:
    for fit in index.thresholds:
        assert fit.source == "fitted"
        assert THRESHOLD_FLOOR <= fit.value <= 1.0
        assert "leave-one-out" in fit.reason and "balanced accuracy" in fit.reason


def test_user_thresholds_are_honoured(encoder: MiniLMEncoder) -> None:
    strict = (SemanticRoute("billing", ROUTES[0].examples, threshold=0.95), *ROUTES[1:])
    index = build_index(strict, encoder.encode(example_texts(strict)))
    assert index.thresholds[0].value == 0.95 and index.thresholds[0].source == "user"
    assert index.thresholds[1].source == "fitted"
    m = match(index, _query(encoder, "Please refund my last payment"))
    assert m.route is None and "billing" in m.reason and "0.95" in m.reason

    lax = (SemanticRoute("smalltalk", ROUTES[2].examples, threshold=0.0),)
    weather = match(build_index(lax, encoder.encode(example_texts(lax))), _query(encoder, OFF_TOPIC[0]))
    assert weather.route == "smalltalk"


def _unit(degrees: float) -> NDArray[np.float32]:
    return np.array([math.cos(math.radians(degrees)), math.sin(math.radians(degrees))], dtype=np.float32)


def test_separable_examples_get_the_middle_of_the_gap() -> None:
    own = np.stack([_unit(0), _unit(10), _unit(20)])
    others = np.stack([_unit(90), _unit(100)])
    fit = fit_threshold(own, others)
    # Leave-one-out nearest: cos 10° for every own example; others' nearest own example: cos 70° at best.
    assert fit.value == pytest.approx((math.cos(math.radians(10)) + math.cos(math.radians(70))) / 2, abs=1e-4)
    assert "3/3 at or above" in fit.reason and "2/2 below" in fit.reason and "balanced accuracy 1.00" in fit.reason


def test_few_examples_get_the_default_raised_above_close_neighbours() -> None:
    alone = fit_threshold(np.stack([_unit(0)]), np.stack([_unit(90)]))
    assert alone.source == "default" and alone.value == DEFAULT_THRESHOLD and "too few" in alone.reason
    crowded = fit_threshold(np.stack([_unit(0), _unit(5)]), np.stack([_unit(30)]))  # neighbour at cos 25° ≈ 0.91
    assert crowded.source == "default" and crowded.value == pytest.approx(0.8)  # the ceiling


def test_thresholds_never_drop_below_the_floor() -> None:
    # Own examples far apart, others further still: the best separation would sit near 0.
    own = np.stack([_unit(0), _unit(80), _unit(160)])
    fit = fit_threshold(own, np.stack([_unit(250)]))
    assert fit.value == THRESHOLD_FLOOR and "kept within" in fit.reason


def test_build_index_checks_its_inputs() -> None:
    with pytest.raises(ValueError, match="expected 2 example vectors"):
        build_index([SemanticRoute("a", ("x", "y"))], np.zeros((3, 4), dtype=np.float32))
    with pytest.raises(ValueError, match="unique"):
        build_index([SemanticRoute("a", ("x",)), SemanticRoute("a", ("y",))], np.zeros((2, 4), dtype=np.float32))
    with pytest.raises(ValueError, match="at least one example"):
        SemanticRoute("a", ())
    with pytest.raises(ValueError, match="threshold"):
        SemanticRoute("a", ("x",), threshold=1.5)


def _msg(role: str, text: str) -> Message:
    return Message(role, [TextPart(text)])  # type: ignore[arg-type]


def test_query_text_is_the_last_user_turn_then_recent_context() -> None:
    messages = [
        _msg("system", "You are a helpful assistant."),
        _msg("user", "first question"),
        _msg("assistant", "first answer"),
        _msg("user", "second question"),
        Message("assistant", [], tool_calls=[]),
        _msg("tool", "tool output"),
        _msg("assistant", "second answer"),
        _msg("user", "  the question that matters  "),
    ]
    assert query_text(messages) == "the question that matters\nsecond answer\nsecond question"
    assert query_text(messages, context_messages=0) == "the question that matters"
    assert query_text(messages, context_messages=10) == (
        "the question that matters\nsecond answer\nsecond question\nfirst answer\nfirst question")


def test_query_text_bounds_length_keeping_the_question() -> None:
    messages = [_msg("user", "old context " * 50), _msg("user", "What is " + "very " * 300 + "long? Answer briefly.")]
    text = query_text(messages, max_chars=120)
    assert len(text) <= 120
    assert text.startswith("What is very") and text.endswith("Answer briefly.")  # head and tail of the question
    short = query_text([_msg("user", "context " * 20), _msg("user", "question")], max_chars=30)
    assert len(short) <= 30 and short.startswith("question\ncontext")


def test_query_text_without_a_user_turn_or_text() -> None:
    assert query_text([_msg("system", "rules")]) == ""
    assert query_text([_msg("user", "earlier"), Message("user", [ImagePart("https://example.com/a.png")])]) == "earlier"


def _found(route: str | None, *scores: tuple[str, float, float]) -> SemanticMatch:
    return SemanticMatch(route, tuple(RouteScore(n, sc, th, "e", sc) for n, sc, th in scores), "")


@pytest.mark.parametrize(("found", "close"), [
    (_found("a", ("a", 0.80, 0.50), ("b", 0.40, 0.50)), False),  # clear winner, clear loser
    (_found("a", ("a", 0.52, 0.50), ("b", 0.10, 0.50)), True),  # the winner barely cleared its threshold
    (_found("a", ("a", 0.80, 0.50), ("b", 0.78, 0.50)), True),  # a runner-up within the margin
    (_found("a", ("a", 0.80, 0.50), ("b", 0.78, 0.90)), False),  # … that is far below its own threshold
    (_found(None, ("a", 0.30, 0.50), ("b", 0.10, 0.50)), False),  # the default, nothing near a threshold
    (_found(None, ("a", 0.48, 0.50), ("b", 0.10, 0.50)), True),  # the default, a route almost cleared
], ids=["clear", "barely-cleared", "runner-up", "runner-up-below-its-threshold", "clear-default", "near-default"])
def test_close_calls_are_those_a_small_change_of_scores_could_turn(found: SemanticMatch, close: bool) -> None:
    assert is_close_call(found, 0.05) is close
