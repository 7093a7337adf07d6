"""Limits, budgets and revocation that hold across processes: two ``switchboard serve`` processes sharing
Redis (127.0.0.1:6379), 50 concurrent requests split between them, the official SDK as the client.

Needs Redis; without it these tests skip, and fail under ``CI=true``.
"""

from __future__ import annotations

import os
import threading
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import openai
import pytest
import yaml

from switchboard.sim.fleet import DEFAULT_FLEET, gateway_config_for_fleet
from tests.cli.test_serve import Served, clean_env
from tests.e2e.servers import SimThread
from tests.e2e.test_governance import ADMIN, SECRET, SMALL, USER, admin

pytestmark = pytest.mark.e2e

REDIS_URL = os.environ.get("SWITCHBOARD_TEST_REDIS", "redis://127.0.0.1:6379/15")


def _redis_or_skip() -> None:
    import redis

    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2).ping()
    except redis.RedisError as exc:
        reason = f"Redis is not reachable at {REDIS_URL} (set SWITCHBOARD_TEST_REDIS): {exc}"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)


@pytest.fixture(scope="module")
def pair(sim: SimThread, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Served, Served]]:
    """Two gateway processes with one configuration: keys, limits and budgets in Redis under a fresh prefix."""
    _redis_or_skip()
    import redis

    tmp = tmp_path_factory.mktemp("redis-pair")
    prefix = f"sbtest:{uuid.uuid4().hex[:8]}:"
    raw = gateway_config_for_fleet(DEFAULT_FLEET, sim.base_url)
    raw["records"] = {"path": str(tmp / "records.db"), "flush_interval": 0.05}
    raw["resilience"] = {"retries": {"attempts": 1}}
    raw["admin"] = {"key": "env:SWITCHBOARD_ADMIN_KEY"}
    raw["auth"] = {"virtual_keys": True, "secret": "env:SWITCHBOARD_KEY_SECRET"}
    raw["limits"] = {"backend": "redis", "redis_url": REDIS_URL, "prefix": prefix}
    raw["models"]["metered"] = {"deployments": [{"provider": "sim-openai", "model": SMALL, "name": "metered-a",
                                                 "price": {"input": 0, "output": 1_000_000}}]}
    (tmp / "switchboard.yaml").write_text(yaml.safe_dump(raw))
    env = clean_env(tmp) | {"SWITCHBOARD_ADMIN_KEY": ADMIN, "SWITCHBOARD_KEY_SECRET": SECRET}
    first = Served([], tmp, env)
    try:
        second = Served([], tmp, env)
    except BaseException:
        first.stop()
        raise
    try:
        yield first, second
    finally:
        assert first.stop() == 0
        assert second.stop() == 0
        client = redis.Redis.from_url(REDIS_URL)
        for name in client.scan_iter(match=f"{prefix}*"):
            client.delete(name)


def _burst(urls: list[str], key: str, n: int, **create: Any) -> list[int]:
    """``n`` concurrent requests (threads released together), alternating between the gateways; the status
    each got."""
    clients = [openai.OpenAI(base_url=f"{u}/v1", api_key=key, max_retries=0) for u in urls]
    go = threading.Barrier(n)

    def one(i: int) -> int:
        go.wait(timeout=60)
        try:
            clients[i % len(clients)].chat.completions.create(messages=USER, **create)
        except openai.APIStatusError as exc:
            return exc.status_code
        return 200

    try:
        with ThreadPoolExecutor(n) as pool:
            return list(pool.map(one, range(n)))
    finally:
        for c in clients:
            c.close()


def _new_key(served: Served, **fields: Any) -> tuple[str, str]:
    status, body, _ = admin(served, "POST", "/admin/keys", fields)
    assert status == 201, body
    return body["key"], body["id"]


def test_a_budget_for_five_admits_five_of_fifty_across_two_processes(pair: tuple[Served, Served]) -> None:
    key, key_id = _new_key(pair[0], budget_total=10.0)  # $2 a request: exactly five
    statuses = (_burst([p.url for p in pair], key, 50, model="metered", max_tokens=2,
                                  extra_headers={"x-sim-output-tokens": "2"}))
    assert statuses.count(200) == 5, statuses
    assert set(statuses) == {200, 403}
    spend = admin(pair[1], "GET", f"/admin/keys/{key_id}")[1]["spend"]
    assert spend["total"] + spend["reserved"] == pytest.approx(10.0)


def test_an_rpm_limit_of_five_admits_five_of_fifty_across_two_processes(pair: tuple[Served, Served]) -> None:
    key, _ = _new_key(pair[1], rpm=5)
    statuses = (_burst([p.url for p in pair], key, 50, model=SMALL))
    assert statuses.count(200) == 5, statuses
    assert set(statuses) == {200, 429}


def test_a_revocation_made_on_one_process_is_seen_by_the_other(pair: tuple[Served, Served]) -> None:
    key, key_id = _new_key(pair[0], rpm=1000)
    with openai.OpenAI(base_url=f"{pair[1].url}/v1", api_key=key, max_retries=0) as client:
        client.chat.completions.create(model=SMALL, messages=USER)  # the other process now holds it in its cache
        assert admin(pair[0], "POST", f"/admin/keys/{key_id}/revoke")[0] == 200
        with pytest.raises(openai.AuthenticationError) as err:
            client.chat.completions.create(model=SMALL, messages=USER)
    assert "revoked" in err.value.message


def test_keys_created_on_one_process_work_on_the_other(pair: tuple[Served, Served], tmp_path: Path) -> None:
    key, _ = _new_key(pair[1], team="ops")
    with openai.OpenAI(base_url=f"{pair[0].url}/v1", api_key=key, max_retries=0) as client:
        assert client.chat.completions.create(model=SMALL, messages=USER).choices
