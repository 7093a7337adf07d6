from __future__ import annotations

import json
import random
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from switchboard.routing.bandit import Bandit, BanditConfig
from switchboard.storage.state import MemoryStateStore, SQLiteStateStore, StateStore, StateStoreError


@pytest.fixture(params=["memory", "sqlite"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StateStore]:
    if request.param == "memory":
        yield MemoryStateStore()
    else:
        with SQLiteStateStore(tmp_path / "state.db") as sqlite_store:
            yield sqlite_store


def test_load_what_was_saved(store: StateStore) -> None:
    assert store.load("bandit") is None
    store.save("bandit", {"version": 1, "cells": [["c0", 1.5]], "name": "café"})
    assert store.load("bandit") == {"version": 1, "cells": [["c0", 1.5]], "name": "café"}
    store.save("bandit", {"version": 2})
    assert store.load("bandit") == {"version": 2}
    assert store.load("other") is None


def test_saved_values_are_snapshots(store: StateStore) -> None:
    value: dict[str, object] = {"n": [1]}
    store.save("k", value)
    value["n"] = [2]
    loaded = store.load("k")
    assert loaded == {"n": [1]}
    assert loaded is not None
    loaded["n"] = [3]
    assert store.load("k") == {"n": [1]}


@pytest.mark.parametrize("value", [{"x": float("nan")}, {"x": float("inf")}, {"x": {1, 2}}, {"x": b"bytes"}])
def test_values_json_cannot_hold_are_refused(store: StateStore, value: dict[object, object]) -> None:
    with pytest.raises((TypeError, ValueError)):
        store.save("k", value)  # type: ignore[arg-type]
    assert store.load("k") is None


def test_keys_must_be_non_empty(store: StateStore) -> None:
    with pytest.raises(ValueError, match="non-empty"):
        store.save("", {})


def test_sqlite_creates_its_directory_and_uses_wal(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "er" / "state.db"
    with SQLiteStateStore(path) as store:
        store.save("k", {"a": 1})
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        key, value, updated = conn.execute("SELECT key, value, updated FROM state").fetchone()
    finally:
        conn.close()
    assert (key, json.loads(value)) == ("k", {"a": 1})
    assert updated > 0


def test_two_stores_on_one_file_see_each_others_writes(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    with SQLiteStateStore(path) as one, SQLiteStateStore(path) as two:
        one.save("k", {"by": "one"})
        assert two.load("k") == {"by": "one"}
        two.save("k", {"by": "two"})
        assert one.load("k") == {"by": "two"}


def test_another_process_can_write_the_same_file(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    script = (
        "import sys\n"
        "from switchboard.storage.state import SQLiteStateStore\n"
        "with SQLiteStateStore(sys.argv[1]) as s:\n"
        "    s.save('shared', {'from': 'child'})\n"
    )
    with SQLiteStateStore(path) as store:
        store.save("mine", {"from": "parent"})
        subprocess.run([sys.executable, "-c", script, str(path)], check=True, timeout=60)
        assert store.load("shared") == {"from": "child"}
        assert store.load("mine") == {"from": "parent"}


def test_a_blob_that_is_not_an_object_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    with SQLiteStateStore(path) as store:
        store.save("k", {})
    conn = sqlite3.connect(path)
    conn.execute("UPDATE state SET value = '[1, 2]'")
    conn.commit()
    conn.close()
    with SQLiteStateStore(path) as store, pytest.raises(StateStoreError, match="not a JSON object"):
        store.load("k")


def test_a_file_that_is_not_a_database_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "junk.db"
    path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StateStoreError, match="cannot use"):
        SQLiteStateStore(path)


def _simulate(bandit: Bandit, rng: random.Random, start: int, rounds: int) -> list[str]:
    picks = []
    world = {"c0": {"a": 0.4, "b": 0.8}, "c1": {"a": 0.8, "b": 0.4}}
    for i in range(start, start + rounds):
        ctx = "c0" if i % 2 else "c1"
        choice = bandit.choose(ctx, ["a", "b"], now=i * 60.0, draws=rng)
        bandit.update(ctx, choice.model, 1.0 if rng.random() < world[ctx][choice.model] else 0.0, i * 60.0)
        picks.append(choice.model)
    return picks


def test_bandit_survives_a_restart_through_sqlite(tmp_path: Path) -> None:
    config = BanditConfig(half_life=3600.0)
    path = tmp_path / "var" / "switchboard.db"
    bandit = Bandit(config)
    _simulate(bandit, random.Random(1), 0, 400)
    with SQLiteStateStore(path) as store:
        store.save("bandit", bandit.to_state())

    # "Restart": new store and bandit objects over the same file.
    with SQLiteStateStore(path) as store:
        state = store.load("bandit")
    assert state is not None
    restored = Bandit.from_state(state, config)
    assert _simulate(restored, random.Random(2), 400, 300) == _simulate(bandit, random.Random(2), 400, 300)
