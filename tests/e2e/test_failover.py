"""A public model with deployments on two providers: a failing deployment is skipped invisibly."""

from __future__ import annotations

import anthropic
import openai
import pytest

from tests.e2e.servers import GatewayThread
from tests.e2e.test_records import record_of


@pytest.mark.parametrize("failure", [{"x-sim-status": "500"}, {"x-sim-status": "529"}, {"x-sim-reset-after": "0"},
                                     {"x-sim-malformed": "1"}, {"x-sim-status": "429", "x-sim-retry-after": "30"}])
def test_chat_fails_over_to_the_next_deployment(gateway: GatewayThread, oai: openai.OpenAI,
                                                failure: dict[str, str]) -> None:
    raw = oai.chat.completions.with_raw_response.create(
        model="duo", messages=[{"role": "user", "content": "hi"}],
        extra_headers={**failure, "x-sim-target": "sim-gpt-small"},
    )
    assert raw.parse().choices[0].message.content
    assert raw.headers["x-switchboard-attempts"] == "2"
    assert raw.headers["x-switchboard-deployment"] == "sim-anthropic/sim-claude"
    rec = record_of(gateway, raw.headers["x-request-id"])
    assert [a.outcome for a in rec.attempts] == ["error", "ok"]
    assert rec.attempts[0].deployment == "sim-openai/sim-gpt-small" and rec.attempts[0].error


@pytest.mark.parametrize("failure", [{"x-sim-status": "503"}, {"x-sim-reset-after": "0"},
                                     {"x-sim-stream-error-after": "0"}])
def test_stream_fails_over_before_first_content(gateway: GatewayThread, ant: anthropic.Anthropic,
                                                failure: dict[str, str]) -> None:
    with ant.messages.stream(model="duo", max_tokens=50, messages=[{"role": "user", "content": "hi"}],
                             extra_headers={**failure, "x-sim-target": "sim-gpt-small"}) as s:
        text = "".join(s.text_stream)
        rid = s.response.headers["x-request-id"]
        assert s.response.headers["x-switchboard-deployment"] == "sim-anthropic/sim-claude"
    assert text
    rec = record_of(gateway, rid)
    assert [a.outcome for a in rec.attempts] == ["error", "ok"] and not rec.partial


def test_callers_mistake_is_not_retried_elsewhere(gateway: GatewayThread, oai: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as e:
        oai.chat.completions.create(model="duo", messages=[{"role": "user", "content": "hi"}],
                                    extra_headers={"x-sim-status": "400", "x-sim-target": "sim-gpt-small"})
    assert e.value.status_code == 400
    rec = record_of(gateway, e.value.response.headers["x-request-id"])
    assert len(rec.attempts) == 1


def test_every_deployment_failing_gives_one_clean_error(oai: openai.OpenAI) -> None:
    with pytest.raises(openai.InternalServerError) as e:
        oai.chat.completions.create(model="duo", messages=[{"role": "user", "content": "hi"}],
                                    extra_headers={"x-sim-status": "500"})
    assert e.value.status_code == 502
    assert e.value.response.headers["x-request-id"]
