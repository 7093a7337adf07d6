"""``GET /metrics`` on the real gateway: Prometheus text with what the traffic did."""

from __future__ import annotations

import re
import urllib.request
from email.message import Message

import openai
import pytest

from tests.e2e.servers import GatewayThread


def scrape(url: str) -> tuple[str, Message]:
    with urllib.request.urlopen(f"{url}/metrics", timeout=10) as resp:
        return resp.read().decode(), resp.headers


def value(text: str, name: str, **labels: str) -> float:
    """The sum of the samples of ``name`` whose labels include ``labels``."""
    total = 0.0
    for line in text.splitlines():
        m = re.fullmatch(rf"{name}(?:\{{(.*)\}})? (\S+)", line)
        if m is None:
            continue
        have = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m.group(1) or ""))
        if all(have.get(k) == v for k, v in labels.items()):
            total += float(m.group(2))
    return total


def test_metrics_count_the_traffic(gateway: GatewayThread, oai: openai.OpenAI) -> None:
    before, _ = scrape(gateway.url)
    ok = value(before, "switchboard_requests_total", model="sim-gpt-small", status_class="2xx")
    bad = value(before, "switchboard_errors_total", endpoint="chat")
    raw = oai.chat.completions.with_raw_response.create(model="fast", messages=[{"role": "user", "content": "hi"}])
    usage = raw.parse().usage
    assert usage is not None
    with pytest.raises(openai.BadRequestError):
        oai.chat.completions.create(model="fast", messages=[])
    text, headers = scrape(gateway.url)
    assert headers["content-type"].startswith("text/plain; version=0.0.4") and headers["x-request-id"]
    assert value(text, "switchboard_requests_total", model="sim-gpt-small", status_class="2xx") == ok + 1
    assert value(text, "switchboard_errors_total", endpoint="chat") == bad + 1  # refused before routing, counted
    output = value(text, "switchboard_tokens_total", model="sim-gpt-small", token_type="output")
    assert output >= usage.completion_tokens
    assert value(text, "gen_ai_client_operation_duration_seconds_count", gen_ai_request_model="sim-gpt-small") >= 1
    assert value(text, "switchboard_requests_in_flight") == 0
    assert "# TYPE switchboard_cost_usd_total counter" in text
