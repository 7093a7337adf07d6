from __future__ import annotations

import pytest

from switchboard.config.model import Price
from switchboard.schemas.canonical import Usage
from switchboard.telemetry.record import cost_usd


def test_plain_cost() -> None:
    assert cost_usd(Usage(1_000_000, 500_000), Price(input=2.0, output=8.0)) == pytest.approx(6.0)


def test_cached_and_reasoning_tokens() -> None:
    # 1M input of which 400k cached (at 0.5), 200k output of which 150k reasoning (billed as output).
    usage = Usage(input_tokens=1_000_000, output_tokens=200_000, cached_tokens=400_000, reasoning_tokens=150_000)
    assert cost_usd(usage, Price(input=2.0, output=8.0, cached_input=0.5)) == pytest.approx(1.2 + 0.2 + 1.6)


def test_cache_writes_and_missing_cached_price() -> None:
    usage = Usage(input_tokens=1_000_000, output_tokens=0, cached_tokens=100_000, cache_write_tokens=300_000)
    price = Price(input=3.0, output=15.0, cache_write=3.75)
    assert cost_usd(usage, price) == pytest.approx(0.6 * 3.0 + 0.1 * 3.0 + 0.3 * 3.75)
