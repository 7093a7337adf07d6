"""Chaos suite: the real gateway over sockets, the official SDKs, simulated upstreams failing in every
way a provider can — and what the client sees.

Every public model here has its own deployment names, so each has its own breakers and tests do not
disturb each other. ``x-sim-target`` fails only the named upstream model, so a request whose first
deployment fails can be answered by the next.
"""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import anthropic
import openai
import pytest

from switchboard import ChatRequest, Gateway, Message, RequestContext, TextPart
from switchboard.app import create_app
from switchboard.config.load import parse_config
from switchboard.config.model import Config
from switchboard.sim.fleet import DEFAULT_FLEET, gateway_config_for_fleet
from tests.e2e.servers import GatewayThread, SimThread
from tests.e2e.test_records import record_of

PRIMARY = "sim-gpt-small"  # OpenAI wire format
SECONDARY = "sim-claude"  # Anthropic wire format
USER = [{"role": "user", "content": "Tell me something."}]


def _pair(prefix: str, **extra: Any) -> dict[str, Any]:
    """A model whose first deployment is (practically always) the OpenAI-format one."""
    return {"deployments": [
        {"provider": "sim-openai", "model": PRIMARY, "name": f"{prefix}-primary", "weight": 1e6,
         "price": {"input": 0.5, "output": 1.5}},
        {"provider": "sim-anthropic", "model": SECONDARY, "name": f"{prefix}-secondary", "weight": 1e-6,
         "price": {"input": 3.0, "output": 15.0}},
    ], **extra}


@pytest.fixture(scope="module")
def sim() -> Iterator[SimThread]:
    s = SimThread(DEFAULT_FLEET)
    yield s
    s.close()


@pytest.fixture(scope="module")
def chaos_config(sim: SimThread, tmp_path_factory: pytest.TempPathFactory) -> Config:
    raw = gateway_config_for_fleet(DEFAULT_FLEET, sim.base_url)
    raw["records"] = {"path": str(tmp_path_factory.mktemp("chaos") / "records.db"), "flush_interval": 0.05}
    raw["resilience"] = {
        "deadline": 30, "attempt_timeout": 0.5, "ttft_timeout": 0.5, "idle_timeout": 1.0,
        "retries": {"attempts": 2, "backoff": 0.001, "max_backoff": 0.01, "max_retry_after": 5},
        "breaker": {"min_requests": 1000, "consecutive_failures": 0},  # trips only where a test asks for it
    }
    raw["models"].update({
        "chain": _pair("chain", fallbacks=["backup"]),
        "backup": {"deployments": [{"provider": "sim-gemini", "model": "sim-gemini", "name": "backup-gemini"}]},
        "cooling": _pair("cool"),
        "solo": {"deployments": [{"provider": "sim-openai", "model": PRIMARY, "name": "solo-a"}]},
        "cutter": _pair("cut", resilience={"breaker": {"consecutive_failures": 2, "cooldown": 300}}),
        "guarded": _pair("guard", resilience={"validators": ["non_empty", "json", "complete"]}),
        "ctx": {"deployments": [{"provider": "sim-openai", "model": PRIMARY, "name": "ctx-small",
                                 "context_window": 128_000}], "context_fallback": "big"},
        "big": {"deployments": [{"provider": "sim-gemini", "model": "sim-gemini", "name": "big-gemini",
                                 "context_window": 1_048_576}]},
        "polite": {"deployments": [{"provider": "sim-openai", "model": PRIMARY, "name": "polite-a"}],
                   "refusal_fallback": "alt"},
        "alt": {"deployments": [{"provider": "sim-anthropic", "model": SECONDARY, "name": "alt-claude"}]},
        "fragile": _pair("fragile", resilience={
            "retries": {"attempts": 1}, "breaker": {"min_requests": 2, "failure_rate": 0.5, "cooldown": 300}}),
        "hedged": _pair("hedge", resilience={"hedge": {"after": 0.2, "budget": 1.0}, "ttft_timeout": 20}),
        "hedged-p95": _pair("p95", resilience={"hedge": {"after": "p95", "budget": 1.0}}),
    })
    return parse_config(raw, env={})


@pytest.fixture(scope="module")
def gateway(chaos_config: Config) -> Iterator[GatewayThread]:  # the conftest's oai/ant clients talk to this one
    g = GatewayThread(create_app(chaos_config))
    yield g
    g.close()


def attempt_log(headers: Any) -> list[list[str]]:
    """``x-switchboard-attempt-log`` as a list of ``[deployment, outcome, reason?, …]``."""
    raw = headers.get("x-switchboard-attempt-log")
    return [entry.split(";") for entry in raw.split(", ")] if raw else []


# Each way an upstream can fail before any content, as x-sim-* headers aimed at the primary only.
FAILURES: dict[str, dict[str, str]] = {
    "http-500": {"x-sim-status": "500"},
    "http-503": {"x-sim-status": "503"},
    "overloaded-529": {"x-sim-status": "529"},
    "reset": {"x-sim-reset-after": "0"},
    "malformed": {"x-sim-malformed": "1"},
    "timeout": {"x-sim-timeout": "1"},
    "error-in-200-stream": {"x-sim-stream-error-after": "0"},
}
REASONS = {"http-500": "http_500", "http-503": "overloaded", "overloaded-529": "overloaded", "reset": "connection",
           "malformed": "malformed", "timeout": "timeout", "error-in-200-stream": None}


def aimed(headers: dict[str, str], reply: str = "all is well here") -> dict[str, str]:
    return {**headers, "x-sim-target": PRIMARY, "x-sim-reply": reply}


@pytest.mark.parametrize("failure", sorted(FAILURES))
def test_openai_client_gets_the_answer_after_failover(oai: openai.OpenAI, failure: str) -> None:
    raw = oai.chat.completions.with_raw_response.create(model="chain", messages=USER,  # type: ignore[arg-type]
                                                        extra_headers=aimed(FAILURES[failure]))
    resp = raw.parse()
    # The reply is scripted for the primary only: the secondary answers in its own words.
    assert resp.choices[0].message.content and resp.choices[0].message.content != "all is well here"
    log = attempt_log(raw.headers)
    assert [e[:2] for e in log] == [["chain-primary", "error"], ["chain-secondary", "ok"]]
    if REASONS[failure]:
        assert log[0][2] == REASONS[failure]
    assert raw.headers["x-switchboard-deployment"] == "chain-secondary"


@pytest.mark.parametrize("failure", sorted(FAILURES))
def test_openai_stream_fails_over_invisibly(oai: openai.OpenAI, failure: str) -> None:
    stream = oai.chat.completions.create(model="chain", messages=USER, stream=True,  # type: ignore[arg-type]
                                         stream_options={"include_usage": True},
                                         extra_headers=aimed(FAILURES[failure], "primary words"))
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text and "primary" not in text
    assert sum(1 for c in chunks if c.choices and c.choices[0].finish_reason) == 1
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0


@pytest.mark.parametrize("failure", sorted(FAILURES))
def test_anthropic_stream_fails_over_invisibly(ant: anthropic.Anthropic, failure: str) -> None:
    with ant.messages.stream(model="chain", max_tokens=200, messages=USER,  # type: ignore[arg-type]
                             extra_headers=aimed(FAILURES[failure], "primary words")) as stream:
        kinds = [event.type for event in stream]
        message = stream.get_final_message()
    assert kinds[0] == "message_start" and kinds[-1] == "message_stop"
    assert kinds.count("message_start") == 1 and kinds.count("message_delta") == 1
    text = "".join(b.text for b in message.content if b.type == "text")
    assert text and "primary" not in text


def test_a_deployment_is_retried_after_the_others_failed_too(oai: openai.OpenAI) -> None:
    raw = oai.chat.completions.with_raw_response.create(
        model="chain", messages=USER,  # type: ignore[arg-type]
        extra_headers={"x-sim-status": "500", "x-sim-times": "2", "x-sim-id": "both-fail-once",
                       "x-sim-target": f"{PRIMARY},{SECONDARY}", "x-sim-reply": "second time lucky"})
    assert raw.parse().choices[0].message.content == "second time lucky"
    assert [e[:2] for e in attempt_log(raw.headers)] == [
        ["chain-primary", "error"], ["chain-secondary", "error"], ["chain-primary", "ok"]]


def test_a_single_deployment_is_retried(oai: openai.OpenAI) -> None:
    raw = oai.chat.completions.with_raw_response.create(
        model="solo", messages=USER,  # type: ignore[arg-type]
        extra_headers={"x-sim-status": "502", "x-sim-times": "1", "x-sim-id": "solo-once"})
    assert raw.parse().choices[0].message.content
    assert [e[:3] for e in attempt_log(raw.headers)] == [["solo-a", "error", "http_502"], ["solo-a", "ok"]]


def test_the_fallback_model_answers_when_every_deployment_failed(oai: openai.OpenAI, gateway: GatewayThread) -> None:
    raw = oai.chat.completions.with_raw_response.create(
        model="chain", messages=USER,  # type: ignore[arg-type]
        extra_headers={"x-sim-status": "500", "x-sim-target": f"{PRIMARY},{SECONDARY}",
                       "x-request-id": "to-the-backup"})
    assert raw.parse().choices[0].message.content
    log = attempt_log(raw.headers)
    assert log[-1][:2] == ["backup-gemini", "ok"] and "model=backup" in log[-1]
    rec = record_of(gateway, "to-the-backup")
    assert rec.status == 200 and rec.deployment == "backup-gemini" and rec.public_model == "chain"
    assert [a.outcome for a in rec.attempts] == ["error", "error", "error", "error", "ok"]


def test_one_well_formed_error_when_everything_failed(oai: openai.OpenAI, ant: anthropic.Anthropic) -> None:
    everything = {"x-sim-status": "500", "x-sim-target": f"{PRIMARY},{SECONDARY},sim-gemini"}
    with pytest.raises(openai.APIStatusError) as caught:
        oai.chat.completions.create(model="chain", messages=USER, extra_headers=everything)  # type: ignore[arg-type]
    err = caught.value
    assert err.status_code == 502 and err.response.headers["x-request-id"]
    body = err.response.json()
    assert set(body) == {"error"} and "all 6 attempts failed" in body["error"]["message"]
    assert len(attempt_log(err.response.headers)) == 6
    # The same in the Anthropic dialect, for a stream: an error status before any event.
    with pytest.raises(anthropic.APIStatusError) as a_caught, ant.messages.stream(
            model="chain", max_tokens=50, messages=USER, extra_headers=everything) as stream:  # type: ignore[arg-type]
        list(stream)
    assert a_caught.value.status_code == 502
    assert a_caught.value.response.json()["type"] == "error"


def test_tool_call_arguments_stay_intact_through_failover(oai: openai.OpenAI) -> None:
    tools = [{"type": "function", "function": {"name": "lookup", "parameters": {
        "type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
        "required": ["city", "days"]}}}]
    stream = oai.chat.completions.create(model="chain", messages=USER, tools=tools, stream=True,  # type: ignore[arg-type]
                                         extra_headers={"x-sim-tool-call": "always", "x-sim-status": "503",
                                                        "x-sim-target": PRIMARY})
    args = "".join(tc.function.arguments or "" for c in stream if c.choices
                   for tc in (c.choices[0].delta.tool_calls or []) if tc.function)
    parsed = json.loads(args)
    assert isinstance(parsed["city"], str) and isinstance(parsed["days"], int)


def test_a_stream_that_breaks_after_content_ends_with_an_error_not_silence(
        oai: openai.OpenAI, ant: anthropic.Anthropic, gateway: GatewayThread) -> None:
    headers = {"x-sim-reply": "one two three four five six", "x-sim-stream-error-after": "2",
               "x-request-id": "broken-mid-stream"}
    got: list[str] = []
    chunks = oai.chat.completions.create(model="chain", messages=USER, stream=True,  # type: ignore[arg-type]
                                         extra_headers=headers)
    with pytest.raises(openai.APIError):
        got.extend(chunk.choices[0].delta.content or "" if chunk.choices else "" for chunk in chunks)
    assert "".join(got) == "one two"  # what was sent stays sent; nothing duplicated, nothing switched
    rec = record_of(gateway, "broken-mid-stream")
    assert rec.partial and rec.status != 200 and [a.deployment for a in rec.attempts] == ["chain-primary"]
    with pytest.raises(anthropic.APIStatusError), ant.messages.stream(
            model="chain", max_tokens=100, messages=USER,  # type: ignore[arg-type]
            extra_headers={**headers, "x-request-id": "broken-mid-stream-2"}) as stream:
        list(stream)


def test_retry_after_longer_than_allowed_moves_on_and_cools_the_deployment(oai: openai.OpenAI) -> None:
    raw = oai.chat.completions.with_raw_response.create(
        model="cooling", messages=USER,  # type: ignore[arg-type]
        extra_headers={"x-sim-status": "429", "x-sim-retry-after": "120", "x-sim-target": PRIMARY})
    assert [e[:3] for e in attempt_log(raw.headers)] == [["cool-primary", "error", "rate_limited"],
                                                         ["cool-secondary", "ok"]]
    # The primary asked for two minutes: it is left alone, not tried and failed again.
    raw = oai.chat.completions.with_raw_response.create(model="cooling", messages=USER)  # type: ignore[arg-type]
    assert raw.headers["x-switchboard-deployment"] == "cool-secondary"
    assert raw.headers["x-switchboard-attempts"] == "1"


def test_the_breaker_opens_and_routing_skips_the_deployment(oai: openai.OpenAI) -> None:
    failing = {"x-sim-status": "500", "x-sim-target": PRIMARY}
    for _ in range(2):
        raw = oai.chat.completions.with_raw_response.create(model="fragile", messages=USER,  # type: ignore[arg-type]
                                                            extra_headers=failing)
        assert raw.headers["x-switchboard-deployment"] == "fragile-secondary"
    raw = oai.chat.completions.with_raw_response.create(model="fragile", messages=USER,  # type: ignore[arg-type]
                                                        extra_headers=failing)
    assert attempt_log(raw.headers) == []  # one attempt, straight to the healthy deployment
    assert raw.headers["x-switchboard-deployment"] == "fragile-secondary"


def test_streams_cut_after_content_count_against_the_breaker(oai: openai.OpenAI) -> None:
    cut = {"x-sim-stream-error-after": "1", "x-sim-target": PRIMARY}
    for _ in range(2):
        chunks = oai.chat.completions.create(model="cutter", messages=USER, stream=True,  # type: ignore[arg-type]
                                             extra_headers=cut)
        with pytest.raises(openai.APIError):
            list(chunks)
    # Two broken streams in a row opened the primary's breaker: the next stream goes to the secondary.
    with oai.chat.completions.with_streaming_response.create(model="cutter", messages=USER, stream=True,  # type: ignore[arg-type]
                                                             extra_headers=cut) as resp:
        assert resp.headers["x-switchboard-deployment"] == "cut-secondary"
        assert resp.headers["x-switchboard-attempts"] == "1"


def test_a_slow_first_token_is_hedged(oai: openai.OpenAI, sim: SimThread, gateway: GatewayThread) -> None:
    before = sim.stats().cancelled_by_client
    stream = oai.chat.completions.create(
        model="hedged", messages=USER, stream=True,  # type: ignore[arg-type]
        extra_headers={"x-sim-ttft-ms": "20000", "x-sim-target": PRIMARY, "x-request-id": "hedged-1"})
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert text
    sim.wait_until(lambda st: st.cancelled_by_client > before)  # the loser's upstream call was cancelled
    rec = record_of(gateway, "hedged-1")
    assert rec.deployment == "hedge-secondary"
    outcomes = {(a.deployment, a.outcome, a.reason, a.hedge) for a in rec.attempts}
    assert outcomes == {("hedge-primary", "error", "hedge_lost", False), ("hedge-secondary", "ok", None, True)}


def test_p95_hedging_waits_for_history(oai: openai.OpenAI) -> None:
    # No time-to-first-token history yet: nothing to base a p95 on, so no hedge, however slow.
    raw = oai.chat.completions.with_raw_response.create(
        model="hedged-p95", messages=USER,  # type: ignore[arg-type]
        extra_headers={"x-sim-ttft-ms": "300", "x-sim-target": PRIMARY})
    assert raw.headers["x-switchboard-attempts"] == "1"
    assert raw.headers["x-switchboard-deployment"] == "p95-primary"


def test_context_overflow_goes_to_the_larger_model(oai: openai.OpenAI) -> None:
    long_prompt = "word " * 200_000  # over the small model's 128k tokens, well under the big one's 1M
    raw = oai.chat.completions.with_raw_response.create(
        model="ctx", messages=[{"role": "user", "content": long_prompt}])
    assert raw.parse().choices[0].message.content
    log = attempt_log(raw.headers)
    assert log[0][:3] == ["ctx-small", "error", "context_length"]
    assert log[1][:2] == ["big-gemini", "ok"] and "model=big" in log[1]


def test_a_refusal_goes_to_the_alternative_model(oai: openai.OpenAI, ant: anthropic.Anthropic) -> None:
    refuse = {"x-sim-refusal": "I cannot help with that.", "x-sim-target": PRIMARY}
    raw = oai.chat.completions.with_raw_response.create(model="polite", messages=USER,  # type: ignore[arg-type]
                                                        extra_headers=refuse)
    msg = raw.parse().choices[0].message
    assert msg.refusal is None and msg.content
    assert [e[:3] for e in attempt_log(raw.headers)] == [["polite-a", "unsatisfactory", "refusal"],
                                                         ["alt-claude", "ok", "model=alt"]]
    answer = ant.messages.create(model="polite", max_tokens=100, messages=USER,  # type: ignore[arg-type]
                                 extra_headers=refuse)
    assert answer.stop_reason == "end_turn"


SCHEMA = {"type": "object", "properties": {"answer": {"type": "string"}}, "required": ["answer"],
          "additionalProperties": False}


@pytest.mark.parametrize(("reply", "reason"), [("not json at all", "json"), ('"   "', "non_empty")])
def test_an_unsatisfactory_answer_falls_back(oai: openai.OpenAI, reply: str, reason: str) -> None:
    raw = oai.chat.completions.with_raw_response.create(
        model="guarded", messages=USER,  # type: ignore[arg-type]
        response_format={"type": "json_schema", "json_schema": {"name": "a", "schema": SCHEMA, "strict": True}},
        extra_headers={"x-sim-reply": reply, "x-sim-target": PRIMARY})
    content = raw.parse().choices[0].message.content
    assert content is not None and isinstance(json.loads(content)["answer"], str)
    assert [e[:3] for e in attempt_log(raw.headers)] == [["guard-primary", "unsatisfactory", reason],
                                                         ["guard-secondary", "ok"]]


def test_when_every_answer_is_unsatisfactory_the_last_one_is_delivered(oai: openai.OpenAI,
                                                                      gateway: GatewayThread) -> None:
    raw = oai.chat.completions.with_raw_response.create(
        model="guarded", messages=USER, max_tokens=3,  # type: ignore[arg-type]
        extra_headers={"x-sim-output-tokens": "50", "x-request-id": "all-too-long"})
    resp = raw.parse()
    assert resp.choices[0].finish_reason == "length"
    assert raw.headers["x-switchboard-unsatisfactory"] == "length"
    rec = record_of(gateway, "all-too-long")
    assert rec.unsatisfactory == "length" and [a.outcome for a in rec.attempts] == ["unsatisfactory"] * 2
    assert rec.cost_usd > 0 and all(a.cost_usd for a in rec.attempts)  # both answers were paid for


def test_the_deadline_header_bounds_the_whole_request(oai: openai.OpenAI, gateway: GatewayThread) -> None:
    with pytest.raises(openai.APIStatusError) as caught:
        oai.chat.completions.create(model="chain", messages=USER,  # type: ignore[arg-type]
                                    extra_headers={"x-sim-timeout": "1", "x-switchboard-timeout": "0.3",
                                                   "x-request-id": "short-deadline"})
    assert caught.value.status_code == 504
    assert caught.value.response.json()["error"]["type"] == "timeout_error"
    with pytest.raises(openai.BadRequestError) as bad:
        oai.chat.completions.create(model="chain", messages=USER,  # type: ignore[arg-type]
                                    extra_headers={"x-switchboard-timeout": "soon"})
    assert bad.value.body["param"] == "x-switchboard-timeout"  # type: ignore[index]


def test_a_client_that_leaves_cancels_a_non_streaming_upstream_call(gateway: GatewayThread, sim: SimThread) -> None:
    before = sim.stats().cancelled_by_client
    client = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key="x", max_retries=0, timeout=0.5)
    with pytest.raises(openai.APITimeoutError):
        client.chat.completions.create(model="hedged", messages=USER,  # type: ignore[arg-type]
                                       extra_headers={"x-sim-timeout": "1", "x-request-id": "left-non-stream"})
    client.close()
    sim.wait_until(lambda st: st.cancelled_by_client > before)
    rec = record_of(gateway, "left-non-stream")
    assert rec.status == 499 and rec.error_type == "ClientDisconnected"


async def test_an_open_deployment_is_probed_back_into_service(sim: SimThread) -> None:
    raw = gateway_config_for_fleet(DEFAULT_FLEET, sim.base_url)
    raw["records"] = {"enabled": False}
    raw["models"] = {"probed": _pair("probed", resilience={
        "retries": {"attempts": 1}, "breaker": {"min_requests": 1, "cooldown": 300, "probe_interval": 0.05}})}
    request = ChatRequest("probed", [Message("user", [TextPart("hi")])], max_tokens=5)
    async with Gateway(parse_config(raw, env={})) as gw:
        changes: asyncio.Queue[tuple[str, str]] = asyncio.Queue()
        gw.breaker_listeners.append(lambda dep, old, new: changes.put_nowait((dep, new)))
        failing = RequestContext.create(endpoint="chat", client_headers={"x-sim-status": "500",
                                                                         "x-sim-target": PRIMARY})
        await gw.chat(request, failing)
        assert failing.record.deployment == "probed-secondary"
        assert await changes.get() == ("probed-primary", "open")
        # The cooldown is five minutes; the probe finds the upstream healthy well before that.
        async with asyncio.timeout(10):
            assert await changes.get() == ("probed-primary", "half_open")
        healthy = RequestContext.create(endpoint="chat")
        await gw.chat(request, healthy)
        assert healthy.record.deployment == "probed-primary"
        assert await changes.get() == ("probed-primary", "closed")


def test_readiness_fails_once_shutdown_begins(chaos_config: Config) -> None:
    g = GatewayThread(create_app(chaos_config))

    def get(path: str) -> tuple[int, Any]:
        try:
            with urllib.request.urlopen(f"{g.url}{path}", timeout=10) as resp:
                return resp.status, json.loads(resp.read())
        except urllib.error.HTTPError as err:
            return err.code, json.loads(err.read())

    try:
        assert get("/health/ready") == (200, {"status": "ready"})
        g.app.start_draining()  # what the server does first on SIGTERM
        assert get("/health/ready") == (503, {"status": "draining"})
        assert get("/health/live")[0] == 200
    finally:
        g.close()
