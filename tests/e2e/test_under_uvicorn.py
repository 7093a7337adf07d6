"""The gateway's ASGI app is a plain ASGI app: the official SDKs get the same answers when uvicorn serves it
on an ephemeral port (the gateway ships its own server; this keeps the app honest for any ASGI server)."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import openai
import pytest
import uvicorn

from switchboard.app import create_app
from switchboard.config.load import parse_config
from switchboard.config.model import Config
from switchboard.sim.fleet import DEFAULT_FLEET, Fleet, gateway_config_for_fleet
from tests.e2e.conftest import model_for
from tests.e2e.servers import SimThread


class UvicornThread:
    def __init__(self, config: Config) -> None:
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(128)  # connections wait in the backlog until uvicorn serves: no start-up race
        self.url = f"http://127.0.0.1:{self._sock.getsockname()[1]}"
        self.server = uvicorn.Server(uvicorn.Config(create_app(config), loop="uvloop", http="httptools",
                                                    lifespan="on", log_level="warning"))
        self._thread = threading.Thread(target=lambda: asyncio.run(self.server.serve(sockets=[self._sock])),
                                        name="uvicorn", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self.server.should_exit = True
        self._thread.join(30)
        self._sock.close()


@pytest.fixture(scope="module")
def served(gateway_config: Config) -> Iterator[UvicornThread]:
    u = UvicornThread(gateway_config)
    yield u
    u.close()


@pytest.mark.parametrize("fmt", ["openai", "anthropic", "gemini"])
def test_openai_sdk_through_uvicorn(served: UvicornThread, fleet: Fleet, fmt: str) -> None:
    client = openai.OpenAI(base_url=f"{served.url}/v1", api_key="x", max_retries=0)
    model = model_for(fleet, fmt)
    resp = client.chat.completions.create(model=model, messages=[{"role": "user", "content": "Hello"}])
    text = resp.choices[0].message.content
    assert text and resp.usage and resp.usage.completion_tokens > 0
    streamed = "".join(c.choices[0].delta.content or "" for c in client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": "Hello"}], stream=True) if c.choices)
    assert streamed == text
    tools = [{"type": "function", "function": {"name": "lookup", "parameters": {
        "type": "object", "properties": {"q": {"type": "string"}}, "required": ["q"]}}}]
    call = client.chat.completions.create(model=model, messages=[{"role": "user", "content": "look it up"}],
                                          tools=tools, extra_headers={"x-sim-tool-call": "always"})  # type: ignore[arg-type]
    tool_calls = call.choices[0].message.tool_calls
    assert tool_calls and isinstance(json.loads(tool_calls[0].function.arguments)["q"], str)  # type: ignore[union-attr]
    client.close()


def test_anthropic_sdk_through_uvicorn(served: UvicornThread, fleet: Fleet) -> None:
    client = anthropic.Anthropic(base_url=served.url, api_key="x", max_retries=0)
    with client.messages.stream(model=model_for(fleet, "gemini"), max_tokens=50,
                                messages=[{"role": "user", "content": "Hello"}]) as stream:
        kinds = [e.type for e in stream]
    assert kinds[0] == "message_start" and kinds[-1] == "message_stop"
    client.close()


def test_a_keyed_request_through_uvicorn_shows_its_quota(sim: SimThread, tmp_path: Path) -> None:
    """Under a server without Switchboard's header-lines extension the app sends the x-ratelimit-* headers as
    ordinary headers: on an answer, a stream and a refusal."""
    raw = gateway_config_for_fleet(DEFAULT_FLEET, sim.base_url)
    raw["records"] = {"enabled": False}
    raw["admin"] = {"key": "env:ADMIN"}
    raw["auth"] = {"virtual_keys": True, "secret": "env:SECRET", "path": str(tmp_path / "keys.db")}
    u = UvicornThread(parse_config(raw, env={"ADMIN": "adm-uvicorn-test-key-0001", "SECRET": "s" * 40}))
    try:
        req = urllib.request.Request(f"{u.url}/admin/keys", method="POST",
                                     data=json.dumps({"name": "q", "rpm": 2, "tpm": 100_000}).encode(),
                                     headers={"authorization": "Bearer adm-uvicorn-test-key-0001",
                                              "content-type": "application/json"})
        with urllib.request.urlopen(req, timeout=30) as resp:
            key = json.loads(resp.read())["key"]
        client = openai.OpenAI(base_url=f"{u.url}/v1", api_key=key, max_retries=0)
        user: Any = [{"role": "user", "content": "Hello"}]
        first = client.chat.completions.with_raw_response.create(model="sim-gpt-small", messages=user)
        assert first.headers["x-ratelimit-limit-requests"] == "2"
        assert first.headers["x-ratelimit-remaining-requests"] == "1"
        assert first.headers["x-ratelimit-limit-tokens"] == "100000"
        with client.chat.completions.with_streaming_response.create(model="sim-gpt-small", messages=user,
                                                                    stream=True) as streamed:
            assert streamed.headers["x-ratelimit-remaining-requests"] == "0"
        with pytest.raises(openai.RateLimitError) as err:
            client.chat.completions.create(model="sim-gpt-small", messages=user)
        assert err.value.response.headers["x-ratelimit-remaining-requests"] == "0"
        client.close()
    finally:
        u.close()
