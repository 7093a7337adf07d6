"""Bad input and failing upstreams: a clear error in the client's dialect, right status, x-request-id."""

from __future__ import annotations

import http.client
import json
import socket
from typing import Any

import anthropic
import openai
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from switchboard.sim.fleet import Fleet
from tests.contract.openapi import validate
from tests.e2e.conftest import model_for
from tests.e2e.servers import GatewayThread


def post(gateway: GatewayThread, path: str, body: bytes, headers: dict[str, str] | None = None,
         method: str = "POST") -> tuple[int, dict[str, str], Any]:
    conn = http.client.HTTPConnection("127.0.0.1", gateway.port, timeout=30)
    try:
        conn.request(method, path, body=body, headers={"content-type": "application/json", **(headers or {})})
        resp = conn.getresponse()
        data = resp.read()
        hdrs = {k.lower(): v for k, v in resp.getheaders()}
        is_json = hdrs.get("content-type", "").startswith("application/json")
        return resp.status, hdrs, json.loads(data) if data and is_json else data
    finally:
        conn.close()


def assert_openai_error(status: int, headers: dict[str, str], body: Any, expected_status: int) -> dict[str, Any]:
    assert status == expected_status, body
    assert headers["x-request-id"]
    validate("ErrorResponse", body)
    assert set(body["error"]) >= {"message", "type", "param", "code"}
    return body["error"]  # type: ignore[no-any-return]


def assert_anthropic_error(status: int, headers: dict[str, str], body: Any, expected_status: int) -> dict[str, Any]:
    assert status == expected_status, body
    assert headers["x-request-id"]
    assert body["type"] == "error" and set(body["error"]) == {"type", "message"}
    return body["error"]  # type: ignore[no-any-return]


def test_malformed_json(gateway: GatewayThread) -> None:
    err = assert_openai_error(*post(gateway, "/v1/chat/completions", b"{not json"), 400)
    assert err["type"] == "invalid_request_error" and "JSON" in err["message"]
    err = assert_anthropic_error(*post(gateway, "/v1/messages", b"[1, 2"), 400)
    assert err["type"] == "invalid_request_error"


def test_empty_body(gateway: GatewayThread) -> None:
    assert_openai_error(*post(gateway, "/v1/chat/completions", b""), 400)


def test_wrong_types_name_the_field(gateway: GatewayThread, fleet: Fleet) -> None:
    body = {"model": model_for(fleet, "openai"), "messages": [{"role": "user", "content": "hi"}], "temperature": "hot"}
    err = assert_openai_error(*post(gateway, "/v1/chat/completions", json.dumps(body).encode()), 400)
    assert err["param"] == "temperature"
    body = {"model": model_for(fleet, "openai"), "messages": [{"role": "user", "content": "hi"}]}
    err = assert_anthropic_error(*post(gateway, "/v1/messages", json.dumps(body).encode()), 400)
    assert "max_tokens" in err["message"]


def test_client_cannot_pass_upstream_url_or_key(gateway: GatewayThread, fleet: Fleet) -> None:
    for key in ("api_base", "base_url", "api_key"):
        body = {"model": model_for(fleet, "openai"), "messages": [{"role": "user", "content": "hi"}],
                key: "http://169.254.169.254/"}
        err = assert_openai_error(*post(gateway, "/v1/chat/completions", json.dumps(body).encode()), 400)
        assert key in err["message"]


def test_unknown_model_in_both_dialects(oai: openai.OpenAI, ant: anthropic.Anthropic) -> None:
    with pytest.raises(openai.NotFoundError) as oe:
        oai.chat.completions.create(model="no-such-model", messages=[{"role": "user", "content": "hi"}])
    assert oe.value.code == "model_not_found"
    assert oe.value.response.headers["x-request-id"]
    with pytest.raises(anthropic.NotFoundError) as ae:
        ant.messages.create(model="no-such-model", max_tokens=10, messages=[{"role": "user", "content": "hi"}])
    assert ae.value.response.headers["x-request-id"]


def test_oversized_body(gateway: GatewayThread) -> None:
    limit = gateway.app.config.server.max_body_bytes
    err = assert_openai_error(*post(gateway, "/v1/chat/completions", b" " * (limit + 1)), 413)
    assert "limit" in err["message"]


def test_unknown_endpoint_and_method(gateway: GatewayThread) -> None:
    assert_openai_error(*post(gateway, "/v1/nope", b"{}"), 404)
    assert_openai_error(*post(gateway, "/v1/chat/completions", b"", method="GET"), 405)


@pytest.mark.parametrize(("method", "path", "allow"), [
    ("GET", "/v1/chat/completions", "POST"),
    ("PUT", "/v1/messages", "POST"),
    ("POST", "/v1/models", "GET, HEAD"),
    ("DELETE", "/v1/models/sim-gpt-small", "GET, HEAD"),
    ("POST", "/health/ready", "GET, HEAD"),
])
def test_a_wrong_method_is_told_the_methods_the_endpoint_takes(gateway: GatewayThread, method: str, path: str,
                                                               allow: str) -> None:
    status, headers, body = post(gateway, path, b"{}", method=method)
    check = assert_anthropic_error if path == "/v1/messages" else assert_openai_error
    check(status, headers, body, 405)
    assert headers["allow"] == allow


@pytest.mark.parametrize("path", ["/health/live", "/health/ready", "/v1/models", "/v1/models/sim-gpt-small"])
def test_head_is_answered_as_get_without_a_body(gateway: GatewayThread, path: str) -> None:
    """Load balancers and uptime checks send HEAD; the answer is GET's head and nothing more: the next response
    on the connection starts right after it."""
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=30) as sock:
        sock.sendall(f"HEAD {path} HTTP/1.1\r\nhost: x\r\n\r\nGET {path} HTTP/1.1\r\nhost: x\r\n\r\n".encode())
        data = b""
        while data.count(b"\r\n\r\n") < 2 or len(data) < data.rindex(b"\r\n\r\n") + 4 + _length(data):
            data += sock.recv(65536)
    head, _, rest = data.partition(b"\r\n\r\n")
    get_head, _, body = rest.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ") and get_head.startswith(b"HTTP/1.1 200 ")
    assert _length(head + b"\r\n\r\n") == _length(get_head + b"\r\n\r\n") == len(body)
    assert _header(head, b"content-type") == _header(get_head, b"content-type")


def _header(head: bytes, name: bytes) -> bytes:
    return next(line.split(b": ", 1)[1] for line in head.split(b"\r\n") if line.lower().startswith(name + b":"))


def _length(data: bytes) -> int:
    """The content-length of the last head in ``data``."""
    last = data[: data.rindex(b"\r\n\r\n")].rsplit(b"HTTP/1.1 ", 1)[-1]
    return int(_header(last, b"content-length"))


def test_embedding_model_on_chat_endpoint(oai: openai.OpenAI, fleet: Fleet) -> None:
    emb = next(m.name for m in fleet.models if m.kind == "embedding")
    with pytest.raises(openai.BadRequestError):
        oai.chat.completions.create(model=emb, messages=[{"role": "user", "content": "hi"}])


def test_request_id_is_echoed(gateway: GatewayThread) -> None:
    status, headers, _ = post(gateway, "/v1/chat/completions", b"{", {"x-request-id": "client-abc-123"})
    assert status == 400 and headers["x-request-id"] == "client-abc-123"


@pytest.mark.parametrize("fmt", ["openai", "anthropic", "gemini"])
def test_upstream_failure_is_a_clean_error(oai: openai.OpenAI, fleet: Fleet, fmt: str) -> None:
    with pytest.raises(openai.APIStatusError) as e:
        oai.chat.completions.create(model=model_for(fleet, fmt), messages=[{"role": "user", "content": "hi"}],
                                    extra_headers={"x-sim-status": "500"})
    assert e.value.status_code == 502
    assert e.value.response.headers["x-request-id"]


@pytest.mark.parametrize("fmt", ["openai", "anthropic", "gemini"])
def test_upstream_rate_limit_passes_retry_after(oai: openai.OpenAI, fleet: Fleet, fmt: str) -> None:
    with pytest.raises(openai.RateLimitError) as e:
        oai.chat.completions.create(model=model_for(fleet, fmt), messages=[{"role": "user", "content": "hi"}],
                                    extra_headers={"x-sim-status": "429", "x-sim-retry-after": "7"})
    assert e.value.response.headers["retry-after"] == "7"


@pytest.mark.parametrize("fmt", ["openai", "anthropic", "gemini"])
def test_context_overflow_is_a_400(oai: openai.OpenAI, fleet: Fleet, fmt: str) -> None:
    model = next(m for m in fleet.models if m.format == fmt and m.kind == "chat")
    huge = "word " * (model.context_window * 2)
    with pytest.raises(openai.BadRequestError) as e:
        oai.chat.completions.create(model=model.name, messages=[{"role": "user", "content": huge}])
    assert e.value.code == "context_length_exceeded"


@pytest.mark.parametrize("fmt", ["openai", "anthropic", "gemini"])
def test_failure_before_first_content_is_not_a_200(oai: openai.OpenAI, fleet: Fleet, fmt: str) -> None:
    with pytest.raises(openai.APIStatusError) as e:
        oai.chat.completions.create(model=model_for(fleet, fmt), messages=[{"role": "user", "content": "hi"}],
                                    stream=True, extra_headers={"x-sim-reset-after": "0"})
    assert e.value.status_code == 502


@pytest.mark.parametrize("fmt", ["openai", "anthropic", "gemini"])
def test_stream_error_after_content_is_never_silent(oai: openai.OpenAI, ant: anthropic.Anthropic, fleet: Fleet,
                                                     fmt: str) -> None:
    model = model_for(fleet, fmt)
    headers = {"x-sim-stream-error-after": "3", "x-sim-output-tokens": "10"}
    got = ""
    with pytest.raises(openai.APIError):  # noqa: PT012
        for chunk in oai.chat.completions.create(model=model, messages=[{"role": "user", "content": "hi"}],
                                                 stream=True, extra_headers=headers):
            got += (chunk.choices[0].delta.content or "") if chunk.choices else ""
    assert got  # content arrived, then the error — never a silent end
    with pytest.raises(anthropic.APIError), ant.messages.stream(
        model=model, max_tokens=50, messages=[{"role": "user", "content": "hi"}], extra_headers=headers
    ) as s:
        for _ in s:
            pass
    headers = {"x-sim-reset-after": "3", "x-sim-output-tokens": "10"}
    with pytest.raises(openai.APIError):
        for _ in oai.chat.completions.create(model=model, messages=[{"role": "user", "content": "hi"}],
                                             stream=True, extra_headers=headers):
            pass


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=12,
)
chat_like = st.fixed_dictionaries(
    {"model": st.sampled_from(["sim-gpt-small", "nope", 3]), "messages": json_values},
    optional={"temperature": json_values, "stream": json_values, "tools": json_values, "max_tokens": json_values,
              "tool_choice": json_values, "response_format": json_values, "n": json_values},
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=st.one_of(json_values, chat_like), path=st.sampled_from(["/v1/chat/completions", "/v1/messages",
                                                                     "/v1/embeddings"]))
def test_fuzzed_bodies_never_cause_a_500(gateway: GatewayThread, body: Any, path: str) -> None:
    status, headers, payload = post(gateway, path, json.dumps(body).encode())
    assert status < 500 or status in (502, 503, 504), payload
    assert headers["x-request-id"]
    if status >= 400:
        if path == "/v1/messages":
            assert payload["type"] == "error"
        else:
            assert set(payload["error"]) >= {"message", "type", "param", "code"}


def test_parameter_the_chosen_provider_cannot_honour(oai: openai.OpenAI, fleet: Fleet) -> None:
    with pytest.raises(openai.BadRequestError) as e:
        oai.chat.completions.create(model=model_for(fleet, "anthropic"), n=2,
                                    messages=[{"role": "user", "content": "hi"}])
    assert e.value.code == "unsupported_parameter" and e.value.param == "n"
    assert e.value.response.headers["x-request-id"]
    # The same request to an OpenAI-format model is fine: two choices come back.
    resp = oai.chat.completions.create(model=model_for(fleet, "openai"), n=2,
                                       messages=[{"role": "user", "content": "hi"}])
    assert [c.index for c in resp.choices] == [0, 1]


def test_json_schema_response_format_across_providers(oai: openai.OpenAI, fleet: Fleet) -> None:
    schema = {"type": "object", "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
              "required": ["name", "age"], "additionalProperties": False}
    for fmt in ("openai", "anthropic", "gemini"):
        resp = oai.chat.completions.create(
            model=model_for(fleet, fmt), messages=[{"role": "user", "content": "Describe a person"}],
            response_format={"type": "json_schema", "json_schema": {"name": "person", "schema": schema}},
        )
        data = json.loads(resp.choices[0].message.content or "")
        assert isinstance(data["name"], str) and isinstance(data["age"], int), fmt
