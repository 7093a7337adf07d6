"""A pass-through ASGI app on the gateway's own server stack: uvicorn (httptools, uvloop) receives the
request and Switchboard's HTTP client forwards the body unchanged to the upstream; the answer is
returned as it came. No parsing, no routing, no translation, no records.

Measured in place of the gateway it splits the overhead: what the server stack and the upstream client
cost (this) against what Switchboard's own request pipeline adds on top (the gateway).

Usage::

    python bench/passthrough.py --port 9200 --upstream-port 9000
"""

from __future__ import annotations

import argparse
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import uvicorn

from switchboard.providers.http import HttpClient

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]


def make_app(upstream: str) -> Callable[[Scope, Callable[[], Awaitable[Message]], Callable[[Message],
                                                                                           Awaitable[None]]],
                                        Awaitable[None]]:
    http: HttpClient | None = None

    async def app(scope: Scope, receive: Callable[[], Awaitable[Message]],
                  send: Callable[[Message], Awaitable[None]]) -> None:
        nonlocal http
        if scope["type"] != "http":
            msg = await receive()
            if msg["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
                msg = await receive()
            await send({"type": "lifespan.shutdown.complete"})
            return
        if http is None:
            http = HttpClient()
        body = b""
        while True:
            msg = await receive()
            body += msg.get("body", b"")
            if not msg.get("more_body"):
                break
        headers = {k.decode(): v.decode() for k, v in scope["headers"] if k in (b"authorization", b"content-type")}
        url = upstream + scope["path"]
        async with http.stream(scope["method"], url, headers=headers, body=body) as resp:
            out = [(b"content-type", resp.headers.get("content-type", "application/json").encode())]
            await send({"type": "http.response.start", "status": resp.status, "headers": out})
            async for chunk in resp.iter_bytes():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b""})

    return app


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--upstream-port", type=int, required=True)
    a = p.parse_args()
    uvicorn.run(make_app(f"http://127.0.0.1:{a.upstream_port}"), host="127.0.0.1", port=a.port, loop="uvloop",
                http="httptools", access_log=False, log_level="warning", proxy_headers=False, server_header=False)


if __name__ == "__main__":
    main()
