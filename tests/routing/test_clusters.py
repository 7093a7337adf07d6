from __future__ import annotations

import json
import os
import random
import subprocess
import sys

import pytest

from switchboard.routing.clusters import PromptClusterer

PROMPTS = [
    "Translate the following paragraph into French: the weather is lovely today.",
    "Write a Python function that merges two sorted lists.",
    "Summarise this contract clause about termination and notice periods.",
    "",
    "日本語で自己紹介を書いてください",
    "x" * 50_000,
]

_RNG = random.Random(11)
_VOCAB = ["".join(_RNG.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(_RNG.randint(3, 9))) for _ in range(4000)]


def _doc(rng: random.Random, words: int = 60) -> list[str]:
    return [rng.choice(_VOCAB) for _ in range(words)]


def test_keys_are_named_and_bounded() -> None:
    clusterer = PromptClusterer(bits=4)
    assert clusterer.size == 16
    assert clusterer.keys()[0] == "c00" and clusterer.keys()[-1] == "c15"
    assert {clusterer.key(p) for p in PROMPTS} <= set(clusterer.keys())
    assert PromptClusterer(bits=1).keys() == ["c0", "c1"]
    assert PromptClusterer(bits=0).keys() == ["c0"]
    assert {PromptClusterer(bits=0).key(p) for p in PROMPTS} == {"c0"}
    assert len(PromptClusterer(bits=10).keys()) == 1024


def test_empty_prompt_gets_the_first_key() -> None:
    assert PromptClusterer().key("") == "c00"
    assert PromptClusterer().key("the and of") == "c00"  # stop words only: no features


def test_keys_are_pinned() -> None:
    # These keys name saved bandit state: if the algorithm changes, bump the signature's "simhash1".
    clusterer = PromptClusterer()
    assert clusterer.signature == "simhash1-b4-s0-m2048"
    assert [clusterer.key(p) for p in PROMPTS[:3]] == ["c01", "c14", "c00"]


def test_keys_do_not_depend_on_the_python_hash_seed() -> None:
    script = (
        "import json, sys\n"
        "from switchboard.routing.clusters import PromptClusterer\n"
        "c = PromptClusterer(bits=6, seed=3)\n"
        "print(json.dumps([c.key(p) for p in json.loads(sys.stdin.read())]))\n"
    )
    here = [PromptClusterer(bits=6, seed=3).key(p) for p in PROMPTS]
    for hash_seed in ("1", "4242"):
        env = {**os.environ, "PYTHONHASHSEED": hash_seed}
        out = subprocess.run(
            [sys.executable, "-c", script], input=json.dumps(PROMPTS), capture_output=True, text=True, env=env,
            check=True, timeout=60,
        )
        assert json.loads(out.stdout) == here


def test_similar_prompts_share_a_cluster_more_often_than_unrelated_ones() -> None:
    clusterer = PromptClusterer()
    rng = random.Random(5)
    n = 600
    similar = unrelated = 0
    for _ in range(n):
        words = _doc(rng)
        edited = list(words)
        for _ in range(6):  # a template with 10 % of its words changed
            edited[rng.randrange(len(edited))] = rng.choice(_VOCAB)
        key = clusterer.key(" ".join(words))
        similar += key == clusterer.key(" ".join(edited))
        unrelated += key == clusterer.key(" ".join(_doc(rng)))
    assert similar / n > 0.35
    assert unrelated / n < 0.12  # chance is 1/16
    assert similar > 4 * unrelated


def test_a_real_template_mostly_stays_together() -> None:
    clusterer = PromptClusterer()
    subjects = ["invoices", "customers", "orders", "tickets", "users", "payments", "products", "events"]
    keys = [
        clusterer.key(f"Write a SQL query that returns the top ten {s} by revenue, grouped by month, for 2023")
        for s in subjects
    ]
    most = max(keys.count(k) for k in set(keys))
    assert most >= len(subjects) // 2


def test_another_seed_is_another_partition() -> None:
    rng = random.Random(8)
    docs = [" ".join(_doc(rng)) for _ in range(200)]
    a, b = PromptClusterer(seed=0), PromptClusterer(seed=1)
    assert sum(a.key(d) == b.key(d) for d in docs) < 60


def test_keys_spread_over_all_clusters() -> None:
    clusterer = PromptClusterer()
    rng = random.Random(9)
    keys = {clusterer.key(" ".join(_doc(rng))) for _ in range(500)}
    assert keys == set(clusterer.keys())


def test_long_prompts_read_only_their_head_and_tail() -> None:
    clusterer = PromptClusterer(max_chars=200)
    head, tail = "alpha beta gamma delta " * 5, " omega psi chi phi" * 5
    assert clusterer.key(head + "middle words " * 10_000 + tail) == clusterer.key(head + "other filler " * 500 + tail)


def test_context_prefers_the_route() -> None:
    clusterer = PromptClusterer()
    assert clusterer.context("anything", route="code") == "route:code"
    assert clusterer.context(route="c07") == "route:c07"  # never confused with cluster c07
    assert clusterer.context("Write a Python function") == clusterer.key("Write a Python function")
    with pytest.raises(ValueError, match="prompt text or a route"):
        clusterer.context()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"bits": -1}, "bits"), ({"bits": 17}, "bits"), ({"max_chars": 4}, "max_chars"), ({"seed": -1}, "seed")],
)
def test_bad_settings_are_refused(kwargs: dict[str, int], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        PromptClusterer(**kwargs)
