"""Every request through the real gateway leaves one record with its route, tokens, cost and outcome."""

from __future__ import annotations

from pathlib import Path

import anthropic
import openai
import pytest

from switchboard.app import create_app
from switchboard.config.load import parse_config
from switchboard.sim.fleet import Fleet, gateway_config_for_fleet
from switchboard.storage.records import RecordQuery
from switchboard.storage.sqlite import SQLiteRecordWriter
from switchboard.telemetry.record import RequestRecord
from tests.e2e.conftest import model_for
from tests.e2e.servers import GatewayThread, SimThread


def record_of(gateway: GatewayThread, request_id: str) -> RequestRecord:
    writer = gateway.app.records
    assert isinstance(writer, SQLiteRecordWriter)
    assert gateway.wait_recorded(request_id)
    assert writer.flush(10)
    found = writer.query(RecordQuery(request_id=request_id))
    assert len(found) == 1
    return found[0]


def test_non_streaming_record(gateway: GatewayThread, oai: openai.OpenAI, fleet: Fleet) -> None:
    model = next(m for m in fleet.models if m.format == "anthropic" and m.kind == "chat")
    raw = oai.chat.completions.with_raw_response.create(
        model=model.name, messages=[{"role": "user", "content": "hello there"}], user="alice",
        metadata={"team": "search"}, extra_headers={"x-sim-cached-tokens": "3", "x-sim-output-tokens": "7"},
    )
    resp = raw.parse()
    rec = record_of(gateway, raw.headers["x-request-id"])
    assert rec.status == 200 and rec.endpoint == "chat" and rec.dialect == "openai"
    assert rec.public_model == model.name and rec.deployment == raw.headers["x-switchboard-deployment"]
    assert rec.caller == "alice" and rec.metadata == {"team": "search"}
    assert resp.usage is not None
    assert (rec.input_tokens, rec.output_tokens, rec.cached_tokens) == (resp.usage.prompt_tokens, 7, 3)
    expected = ((rec.input_tokens - 3) * model.price_input + 3 * model.price_cached + 7 * model.price_output) / 1e6
    assert rec.cost_usd == pytest.approx(expected)
    assert float(raw.headers["x-switchboard-cost-usd"]) == pytest.approx(expected, abs=1e-8)
    assert [a.outcome for a in rec.attempts] == ["ok"]
    assert rec.latency_ms > 0 and rec.ttft_ms is not None


def test_streaming_record(gateway: GatewayThread, ant: anthropic.Anthropic, fleet: Fleet) -> None:
    with ant.messages.with_streaming_response.create(
        model=model_for(fleet, "gemini"), max_tokens=50, stream=True,
        messages=[{"role": "user", "content": "hi"}], extra_headers={"x-sim-reasoning-tokens": "4"},
    ) as resp:
        rid = resp.headers["x-request-id"]
        for _ in resp.iter_lines():
            pass
    rec = record_of(gateway, rid)
    assert rec.stream and rec.status == 200 and rec.dialect == "anthropic" and not rec.partial
    assert rec.output_tokens > 4 and rec.reasoning_tokens == 4
    assert rec.ttft_ms is not None and rec.latency_ms >= rec.ttft_ms


def test_error_and_partial_records(gateway: GatewayThread, oai: openai.OpenAI, fleet: Fleet) -> None:
    with pytest.raises(openai.NotFoundError) as e:
        oai.chat.completions.create(model="missing-model", messages=[{"role": "user", "content": "x"}])
    rec = record_of(gateway, e.value.response.headers["x-request-id"])
    assert rec.status == 404 and rec.error_type == "ModelNotFound"

    with oai.chat.completions.with_streaming_response.create(
        model=model_for(fleet, "openai"), messages=[{"role": "user", "content": "x"}], stream=True,
        extra_headers={"x-sim-stream-error-after": "2", "x-sim-output-tokens": "10"},
    ) as resp:
        rid = resp.headers["x-request-id"]
        body = "\n".join(resp.iter_lines())
    assert "event: error" in body and "[DONE]" not in body
    rec = record_of(gateway, rid)
    assert rec.partial and rec.status >= 500 and rec.error_type


@pytest.mark.parametrize("fmt", ["openai", "anthropic", "gemini"])
def test_client_disconnect_cancels_the_upstream(gateway: GatewayThread, sim: SimThread, oai: openai.OpenAI,
                                                fleet: Fleet, fmt: str) -> None:
    before = sim.stats().cancelled_by_client
    with oai.chat.completions.with_streaming_response.create(
        model=model_for(fleet, fmt), messages=[{"role": "user", "content": "x"}], stream=True,
        extra_headers={"x-sim-tps": "5", "x-sim-output-tokens": "500"},  # 100 s of stream if not cancelled
    ) as resp:
        rid = resp.headers["x-request-id"]
        first = next(line for line in resp.iter_lines() if line.startswith("data: "))
        assert '"content"' in first or '"role"' in first
    # Leaving the block closed the client connection: the gateway must close its upstream call.
    sim.wait_until(lambda st: st.cancelled_by_client > before)
    rec = record_of(gateway, rid)
    assert rec.status == 499 and rec.partial and rec.error_type == "ClientDisconnected"


def test_client_leaving_before_the_first_token_cancels_the_upstream(gateway: GatewayThread, sim: SimThread,
                                                                    fleet: Fleet) -> None:
    before = sim.stats().cancelled_by_client
    client = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key="x", max_retries=0, timeout=0.5)
    with pytest.raises(openai.APITimeoutError):  # the client gives up while the model is still "thinking"
        client.chat.completions.create(model=model_for(fleet, "anthropic"), stream=True,
                                       messages=[{"role": "user", "content": "x"}],
                                       extra_headers={"x-sim-ttft-ms": "60000", "x-request-id": "leaving-early"})
    client.close()
    sim.wait_until(lambda st: st.cancelled_by_client > before)
    rec = record_of(gateway, "leaving-early")
    assert rec.status == 499 and rec.error_type == "ClientDisconnected"


def test_rejected_input_is_recorded_too(gateway: GatewayThread) -> None:
    from tests.e2e.test_errors import post

    status, _, _ = post(gateway, "/v1/messages", b'{"model": 1}', {"x-request-id": "bad-input-1"})
    assert status == 400
    rec = record_of(gateway, "bad-input-1")
    assert (rec.status, rec.endpoint, rec.dialect, rec.error_type) == (400, "messages", "anthropic", "InvalidRequest")


def test_prompt_and_completion_text_are_kept_only_when_asked_and_redacted(
        gateway: GatewayThread, oai: openai.OpenAI, sim: SimThread, fleet: Fleet, tmp_path: Path) -> None:
    # The session's gateway keeps no text.
    raw = oai.chat.completions.with_raw_response.create(
        model=model_for(fleet, "openai"), messages=[{"role": "user", "content": "mail ada@example.com"}])
    plain = record_of(gateway, raw.headers["x-request-id"])
    assert (plain.prompt, plain.completion) == (None, None)

    cfg = gateway_config_for_fleet(fleet, sim.base_url)
    cfg["records"] = {"path": str(tmp_path / "records.db"), "flush_interval": 0.05, "capture_prompts": True,
                      "capture_completions": True}
    keeping = GatewayThread(create_app(parse_config(cfg, env={})))
    try:
        with openai.OpenAI(base_url=f"{keeping.url}/v1", api_key="x", max_retries=0) as client:
            whole = client.chat.completions.with_raw_response.create(
                model=model_for(fleet, "openai"),
                messages=[{"role": "system", "content": "Be brief."},
                          {"role": "user", "content": "Write to ada@example.com, card 4111 1111 1111 1111"}])
            streamed = client.chat.completions.with_raw_response.create(
                model=model_for(fleet, "anthropic"), stream=True,
                messages=[{"role": "user", "content": "Call +44 20 7946 0958"}])
            pieces = [c.choices[0].delta.content or "" for c in streamed.parse() if c.choices]
        first, second = (record_of(keeping, r.headers["x-request-id"]) for r in (whole, streamed))
    finally:
        keeping.close()
    answer = whole.parse().choices[0].message.content
    assert first.prompt is not None and "Be brief." in first.prompt and "Write to" in first.prompt
    assert "ada@example.com" not in first.prompt and "4111" not in first.prompt
    assert first.completion == answer and answer
    assert second.prompt is not None and "7946" not in second.prompt and second.prompt.startswith("Call")
    assert second.completion == "".join(pieces) and second.completion
