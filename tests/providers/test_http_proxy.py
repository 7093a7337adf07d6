"""Egress proxies: which connections go through one (from the environment), and tunnels through a real
``CONNECT`` proxy on a loopback socket, to plain and TLS upstreams."""

from __future__ import annotations

import asyncio
import base64
import os
import shutil
import ssl
import subprocess
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
import uvloop

from switchboard.errors import UpstreamConnectionError
from switchboard.providers.http import HttpClient, Proxy, proxy_for
from tests.providers.test_http import Upstream, start_upstream, stop_server

NAME = "upstream.test"  # a name only the proxy resolves (to 127.0.0.1): loopback targets never use a proxy


# -- which connections use a proxy -----------------------------------------------------------------

_PROXY_VARIABLES = ("HTTPS_PROXY", "HTTP_PROXY", "ALL_PROXY", "NO_PROXY")


@pytest.fixture
def environ(monkeypatch: pytest.MonkeyPatch) -> Callable[..., None]:
    """Set the proxy variables to exactly those given (the others, in either case, removed)."""
    def set_to(**values: str) -> None:
        for name in _PROXY_VARIABLES:
            monkeypatch.delenv(name, raising=False)
            monkeypatch.delenv(name.lower(), raising=False)
        for name, value in values.items():
            monkeypatch.setenv(name, value)
    return set_to


def test_the_scheme_picks_the_proxy_and_no_proxy_skips_it(environ: Callable[..., None]) -> None:
    env = {"HTTPS_PROXY": "http://egress:3128", "HTTP_PROXY": "plain:8080", "NO_PROXY": ".corp.example, 10.0.0.0/8"}
    environ(**env)
    assert proxy_for("https", "api.openai.com") == Proxy("egress", 3128)
    assert proxy_for("http", "vllm.example") == Proxy("plain", 8080)
    assert proxy_for("https", "llm.corp.example") is None
    assert proxy_for("https", "corp.example") is None
    assert proxy_for("https", "10.1.2.3") is None
    assert proxy_for("https", "11.1.2.3") == Proxy("egress", 3128)
    environ(**{**env, "NO_PROXY": "*"})
    assert proxy_for("https", "api.openai.com") is None


def test_loopback_is_reached_directly_and_lower_case_names_win(environ: Callable[..., None]) -> None:
    environ(ALL_PROXY="http://egress:3128", all_proxy="http://lower:1")
    assert proxy_for("http", "127.0.0.1") is None
    assert proxy_for("http", "localhost") is None
    assert proxy_for("http", "[::1]") is None
    assert proxy_for("http", "example.com") == Proxy("lower", 1)
    environ()
    assert proxy_for("https", "example.com") is None


def test_credentials_become_basic_proxy_authorization(environ: Callable[..., None]) -> None:
    environ(HTTPS_PROXY="http://me:p%40ss@egress:3128")
    proxy = proxy_for("https", "example.com")
    assert proxy == Proxy("egress", 3128, "Basic " + base64.b64encode(b"me:p@ss").decode())


def test_only_http_proxies_are_supported(environ: Callable[..., None]) -> None:
    environ(HTTPS_PROXY="socks5://egress:1080")
    with pytest.raises(UpstreamConnectionError, match="only http:// proxies"):
        proxy_for("https", "example.com")


# -- tunnels through a real proxy ------------------------------------------------------------------


class ConnectProxy:
    """A minimal ``CONNECT`` proxy: resolves ``NAME`` to 127.0.0.1, refuses other hosts with 403, and
    records each tunnel's target and ``Proxy-Authorization``."""

    def __init__(self) -> None:
        self.tunnels: list[tuple[str, str | None]] = []
        self.port = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        await stop_server(self._server, self._tasks)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
        method, target, _ = head[0].split(" ")
        auth = next((line.split(": ", 1)[1] for line in head[1:] if line.lower().startswith("proxy-authorization:")),
                    None)
        self.tunnels.append((target, auth))
        host, _, port = target.rpartition(":")
        if method != "CONNECT" or host != NAME:
            writer.write(b"HTTP/1.1 403 Forbidden\r\ncontent-length: 0\r\n\r\n")
            await writer.drain()
            writer.close()
            return
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", int(port))
        writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            finally:
                dst.close()

        for task in (asyncio.create_task(pipe(reader, up_writer)), asyncio.create_task(pipe(up_reader, writer))):
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)


@pytest.fixture
async def proxy() -> AsyncIterator[ConnectProxy]:
    server = ConnectProxy()
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
async def upstream() -> AsyncIterator[Upstream]:
    server = await start_upstream()
    yield server
    await server.stop()


async def test_plain_http_goes_through_the_tunnel_and_keeps_it(proxy: ConnectProxy, upstream: Upstream,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTP_PROXY", f"http://user:secret@127.0.0.1:{proxy.port}")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    client = HttpClient()
    for _ in range(3):
        response = await client.request("POST", f"http://{NAME}:{upstream.port}/echo", headers={}, body=b"via")
        assert response.body == b"via"
    auth = "Basic " + base64.b64encode(b"user:secret").decode()
    assert proxy.tunnels == [(f"{NAME}:{upstream.port}", auth)]  # one tunnel, kept alive for all three
    assert upstream.requests[0].header("host") == [f"{NAME}:{upstream.port}"]
    await client.aclose()


async def test_a_refused_tunnel_is_a_connection_error(proxy: ConnectProxy, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTPS_PROXY", f"http://127.0.0.1:{proxy.port}")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    client = HttpClient()
    with pytest.raises(UpstreamConnectionError, match="403 Forbidden"):
        await client.request("GET", "https://elsewhere.test/v1/models", headers={})
    await client.aclose()


@pytest.fixture
def name_certificate(tmp_path: Path) -> Path:
    return make_certificate(tmp_path)


def make_certificate(tmp_path: Path) -> Path:
    """A throwaway self-signed certificate for ``NAME``, made with the openssl command."""
    if shutil.which("openssl") is None:
        if os.environ.get("CI") == "true":
            pytest.fail("the openssl command is needed to make a test certificate")
        pytest.skip("the openssl command is not installed")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                    "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "2", "-subj", f"/CN={NAME}",
                    "-addext", f"subjectAltName=DNS:{NAME}"], check=True, capture_output=True, timeout=60)
    return cert


async def test_https_runs_tls_inside_the_tunnel(proxy: ConnectProxy, name_certificate: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(name_certificate, name_certificate.with_name("key.pem"))
    upstream = await start_upstream(context)
    monkeypatch.setenv("HTTPS_PROXY", f"http://127.0.0.1:{proxy.port}")
    monkeypatch.setenv("SSL_CERT_FILE", str(name_certificate))  # trust the test certificate
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    client = HttpClient()
    try:
        for _ in range(2):
            response = await client.request("POST", f"https://{NAME}:{upstream.port}/echo", headers={}, body=b"tls")
            assert response.body == b"tls"
        async with client.stream("GET", f"https://{NAME}:{upstream.port}/chunked", headers={}) as streamed:
            assert await streamed.read() == b"hello world"
        assert proxy.tunnels == [(f"{NAME}:{upstream.port}", None)]
        assert upstream.connections == 1
    finally:
        await client.aclose()
        await upstream.stop()


@pytest.mark.parametrize("tls", [False, True], ids=["http", "https"])
def test_tunnels_on_uvloop(tls: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The gateway runs on uvloop: handing a tunnel to the connection (and starting TLS in it) works there too."""
    cert = make_certificate(tmp_path) if tls else None

    async def run() -> None:
        assert "uvloop" in type(asyncio.get_running_loop()).__module__
        context = None
        if cert is not None:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(cert, cert.with_name("key.pem"))
            monkeypatch.setenv("SSL_CERT_FILE", str(cert))
        upstream = await start_upstream(context)
        tunnels = ConnectProxy()
        await tunnels.start()
        monkeypatch.setenv("HTTPS_PROXY" if tls else "HTTP_PROXY", f"http://127.0.0.1:{tunnels.port}")
        client = HttpClient()
        try:
            url = f"{'https' if tls else 'http'}://{NAME}:{upstream.port}"
            for _ in range(2):
                assert (await client.request("POST", f"{url}/echo", headers={}, body=b"uv")).body == b"uv"
            async with client.stream("GET", f"{url}/chunked", headers={}) as streamed:
                assert await streamed.read() == b"hello world"
            assert tunnels.tunnels == [(f"{NAME}:{upstream.port}", None)]
        finally:
            await client.aclose()
            await upstream.stop()
            await tunnels.stop()

    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(run())
