"""Per-model random failures: every mode reaches the SDK as the right error, reproducibly with a seed."""

from __future__ import annotations

import json
from typing import Any

import openai
import pytest

from switchboard.sim import Fleet, SimModel, SimServer

USER: list[Any] = [{"role": "user", "content": "hello"}]


def flaky(*modes: str, rate: float = 1.0) -> Fleet:
    return Fleet(
        [
            SimModel("flaky", failure_rate=rate, failure_modes=modes, output_tokens=8),
            SimModel("steady", output_tokens=8),
        ]
    )


@pytest.mark.parametrize(
    ("mode", "error"),
    [
        ("429", openai.RateLimitError),
        ("500", openai.InternalServerError),
        ("reset", openai.APIConnectionError),
        ("malformed", json.JSONDecodeError),
        ("stream-error", openai.InternalServerError),
    ],
)
async def test_each_mode(mode: str, error: type[Exception]) -> None:
    async with SimServer(flaky(mode), seed=0) as sim:
        client = openai.AsyncOpenAI(base_url=f"{sim.base_url}/v1", api_key="x", max_retries=0)
        try:
            with pytest.raises(error):
                await client.chat.completions.create(model="flaky", messages=USER)
            ok = await client.chat.completions.create(model="steady", messages=USER)
            assert ok.choices[0].message.content
        finally:
            await client.close()
        assert sim.stats.failures_injected == 1


async def test_an_early_reset_comes_before_any_content() -> None:
    async with SimServer(flaky("early-reset"), seed=0) as sim:
        client = openai.AsyncOpenAI(base_url=f"{sim.base_url}/v1", api_key="x", max_retries=0)
        got: list[Any] = []

        async def read() -> None:
            stream = await client.chat.completions.create(model="flaky", messages=USER, stream=True)
            got.extend([chunk async for chunk in stream])

        try:
            with pytest.raises(openai.APIConnectionError):
                await read()
        finally:
            await client.close()
    assert not any(c.choices and c.choices[0].delta.content for c in got)


async def test_injected_rate_limit_sends_retry_after() -> None:
    async with SimServer(flaky("429"), seed=0) as sim:
        client = openai.AsyncOpenAI(base_url=f"{sim.base_url}/v1", api_key="x", max_retries=0)
        try:
            with pytest.raises(openai.RateLimitError) as exc:
                await client.chat.completions.create(model="flaky", messages=USER)
        finally:
            await client.close()
    assert exc.value.response.headers["retry-after"] == "1"


async def test_injected_timeout_hangs(sim: SimServer) -> None:
    sim.fleet = flaky("timeout")
    client = openai.AsyncOpenAI(base_url=f"{sim.base_url}/v1", api_key="x", max_retries=0, timeout=0.2)
    try:
        with pytest.raises(openai.APITimeoutError):
            await client.chat.completions.create(model="flaky", messages=USER)
    finally:
        await client.close()
    await sim.stats.wait_until(lambda s: s.cancelled_by_client == 1)


async def outcomes(seed: int) -> list[str]:
    results = []
    async with SimServer(flaky("500", "429", rate=0.5), seed=seed) as sim:
        client = openai.AsyncOpenAI(base_url=f"{sim.base_url}/v1", api_key="x", max_retries=0)
        try:
            for _ in range(30):
                try:
                    await client.chat.completions.create(model="flaky", messages=USER)
                    results.append("ok")
                except openai.APIStatusError as exc:
                    results.append(str(exc.status_code))
        finally:
            await client.close()
    return results


async def test_seeded_injection_is_reproducible() -> None:
    first = await outcomes(7)
    assert first == await outcomes(7)
    assert {"ok", "500", "429"} == set(first)


async def test_scripted_headers_win_over_injection() -> None:
    async with SimServer(flaky("500"), seed=0) as sim:
        client = openai.AsyncOpenAI(base_url=f"{sim.base_url}/v1", api_key="x", max_retries=0)
        try:
            with pytest.raises(openai.RateLimitError):
                await client.chat.completions.create(
                    model="flaky", messages=USER, extra_headers={"x-sim-status": "429"}
                )
        finally:
            await client.close()
        assert sim.stats.failures_injected == 0
