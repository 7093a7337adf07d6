"""Fixtures: a simulated-provider server on a free port, and the official SDK clients pointed at it."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator

import anthropic

# The SDKs import httpcore2 when their first client is built, and that import reads package metadata
# from disk: importing it here keeps the blocking read off the event loop (the suite runs blockbuster).
import httpcore2  # noqa: F401
import openai
import pytest
from google import genai
from google.genai import types

from switchboard.sim import DEFAULT_FLEET, Fleet, SimServer

#: the default fleet without latency, so tests run at full speed
FAST_FLEET = Fleet(dataclasses.replace(m, ttft_ms=0.0, tokens_per_second=0.0) for m in DEFAULT_FLEET)


@pytest.fixture
async def sim() -> AsyncIterator[SimServer]:
    async with SimServer(FAST_FLEET, seed=1) as server:
        yield server


@pytest.fixture
async def oai(sim: SimServer) -> AsyncIterator[openai.AsyncOpenAI]:
    client = openai.AsyncOpenAI(base_url=f"{sim.base_url}/v1", api_key="x", max_retries=0)
    yield client
    await client.close()


@pytest.fixture
async def claude(sim: SimServer) -> AsyncIterator[anthropic.AsyncAnthropic]:
    client = anthropic.AsyncAnthropic(base_url=sim.base_url, api_key="x", max_retries=0)
    yield client
    await client.close()


@pytest.fixture
async def gemini(sim: SimServer) -> AsyncIterator[genai.Client]:
    # google-genai joins base_url and api_version; the gateway's Gemini base URL ends in /v1beta too
    client = genai.Client(api_key="x", http_options=types.HttpOptions(base_url=sim.base_url, api_version="v1beta"))
    yield client
    await client.aio.aclose()
    client.close()
