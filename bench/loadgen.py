"""Closed-loop load generator for OpenAI chat completions on raw asyncio sockets.

HTTP/1.1 with keep-alive, one connection per concurrent worker, responses parsed with httptools.
Latency is measured from just before the request is written to the last body byte; time to first
token (streams) from the same instant to the arrival of the first SSE ``data:`` frame whose
``choices[].delta.content`` is not empty. Every cell is bounded by a request count *and* a duration.

Run by ``gateway_overhead.py`` as a separate process speaking JSON lines (``--serve``): it sends
``{"op": "cell", "spec": {...}}``, we warm up and answer ``{"event": "warm"}``, it samples the
servers and sends ``{"op": "go"}``, we answer ``{"event": "result", "result": {...}}``.
By hand::

    python bench/loadgen.py --port 8080 --model bench-0ms --stream -c 16 -n 2000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, cast

import httptools
import orjson

__all__ = ["CellSpec", "main", "run_cell"]


@dataclass(frozen=True, slots=True)
class CellSpec:
    """One measurement: where to send, what to send, how hard and for how long (``warmup=0``: none)."""

    port: int
    model: str
    stream: bool
    concurrency: int
    requests: int
    duration_s: float
    warmup: int
    host: str = "127.0.0.1"
    path: str = "/v1/chat/completions"
    headers: dict[str, str] = field(default_factory=dict)
    max_tokens: int = 20
    timeout_s: float = 30.0
    warmup_max_s: float = 10.0


def request_bytes(spec: CellSpec) -> bytes:
    """The raw HTTP/1.1 request sent (identically) for every request of a cell."""
    body = orjson.dumps({
        "model": spec.model,
        "messages": [{"role": "user", "content": "Count to twenty."}],
        "max_tokens": spec.max_tokens,
        "stream": spec.stream,
    })
    head = [
        f"POST {spec.path} HTTP/1.1",
        f"host: {spec.host}:{spec.port}",
        "content-type: application/json",
        "accept: text/event-stream" if spec.stream else "accept: application/json",
        f"content-length: {len(body)}",
        *(f"{k}: {v}" for k, v in spec.headers.items()),
    ]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


class _Exchange:
    """One request/response on a connection: timestamps and what the body showed."""

    __slots__ = ("body", "content_chunks", "done", "error", "future", "saw_done", "sse", "status",
                 "stream", "t_end", "t_first", "t_send")

    def __init__(self, stream: bool, future: asyncio.Future[None]) -> None:
        self.stream = stream
        self.future = future
        self.t_send = time.perf_counter_ns()
        self.t_first = 0
        self.t_end = 0
        self.status = 0
        self.error: str | None = None
        self.content_chunks = 0
        self.saw_done = False
        self.done = False
        self.body = bytearray()
        self.sse = bytearray()

    def fail(self, kind: str) -> None:
        if self.error is None:
            self.error = kind
        self.finish()

    def finish(self) -> None:
        if not self.done:
            self.done = True
            self.t_end = time.perf_counter_ns()
            if not self.future.done():
                self.future.set_result(None)

    def feed(self, data: bytes) -> None:
        if self.status != 200 or not self.stream:
            self.body += data
            return
        now = time.perf_counter_ns()
        if b"\r" in data:
            data = data.replace(b"\r\n", b"\n")
        buf = self.sse
        buf += data
        while (i := buf.find(b"\n\n")) >= 0:
            frame = bytes(buf[:i])
            del buf[: i + 2]
            self._frame(frame, now)

    def _frame(self, frame: bytes, now: int) -> None:
        event = b""
        data: list[bytes] = []
        for line in frame.split(b"\n"):
            if line.startswith(b"data:"):
                data.append(line[6:] if line[5:6] == b" " else line[5:])
            elif line.startswith(b"event:"):
                event = line[6:].strip()
        if event == b"error":
            self.error = self.error or "stream: error event"
            return
        if not data:
            return  # comment or keep-alive
        payload = b"\n".join(data)
        if payload == b"[DONE]":
            self.saw_done = True
            return
        try:
            obj = orjson.loads(payload)
        except orjson.JSONDecodeError:
            self.error = self.error or "stream: bad JSON frame"
            return
        if not isinstance(obj, dict) or "error" in obj:
            self.error = self.error or "stream: error frame"
            return
        for choice in obj.get("choices") or ():
            if (choice.get("delta") or {}).get("content"):
                self.content_chunks += 1
                if not self.t_first:
                    self.t_first = now

    def complete(self) -> None:
        """The whole response has arrived: decide whether it was a success."""
        if self.status != 200:
            self.error = self.error or f"http {self.status}"
        elif self.stream:
            if not self.saw_done:
                self.error = self.error or "stream: no [DONE]"
            elif not self.content_chunks:
                self.error = self.error or "stream: no content"
        else:
            try:
                choice = orjson.loads(self.body)["choices"][0]
                ok = bool(choice["message"]["content"])
            except (orjson.JSONDecodeError, KeyError, IndexError, TypeError):
                ok = False
            if not ok:
                self.error = self.error or "body: no content"
        self.finish()


class _Connection(asyncio.Protocol):
    """A keep-alive HTTP/1.1 client connection carrying one exchange at a time."""

    def __init__(self) -> None:
        self._parser = httptools.HttpResponseParser(self)
        self._transport: asyncio.Transport | None = None
        self._ex: _Exchange | None = None
        self.closed = False
        self.keep_alive = True

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self._transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            if self._ex is not None:
                self._ex.fail(f"http parse error: {type(exc).__name__}")
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._ex is not None and not self._ex.done:
            self._ex.fail("connection lost")

    # httptools callbacks
    def on_headers_complete(self) -> None:
        if self._ex is not None:
            self._ex.status = self._parser.get_status_code()
        self.keep_alive = self._parser.should_keep_alive()

    def on_body(self, body: bytes) -> None:
        if self._ex is not None:
            self._ex.feed(body)

    def on_message_complete(self) -> None:
        if self._ex is not None:
            self._ex.complete()

    # client side
    def close(self) -> None:
        self.closed = True
        if self._transport is not None:
            self._transport.close()

    async def exchange(self, raw: bytes, stream: bool, timeout_s: float) -> _Exchange:
        assert self._transport is not None
        ex = self._ex = _Exchange(stream, asyncio.get_running_loop().create_future())
        ex.t_send = time.perf_counter_ns()
        self._transport.write(raw)
        try:
            await asyncio.wait_for(ex.future, timeout_s)
        except TimeoutError:
            ex.fail("timeout")
            self.close()
        self._ex = None
        return ex


@dataclass(slots=True)
class _Tally:
    latencies_ns: list[int] = field(default_factory=list)
    ends_ns: list[int] = field(default_factory=list)
    ttfts_ns: list[int] = field(default_factory=list)
    chunks: list[int] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    attempted: int = 0
    reconnects: int = 0
    elapsed_s: float = 0.0
    cpu_s: float = 0.0
    t0_ns: int = 0
    stop_ns: int = 0  # when the first worker found the budget spent: all workers were busy until then

    def rps(self, concurrency: int) -> float:
        """Completions per second while every worker was busy; the whole phase if that window is too short."""
        window = (self.stop_ns - self.t0_ns) / 1e9
        done = sum(1 for t in self.ends_ns if t <= self.stop_ns)
        if window > 0 and done >= max(10, concurrency):
            return done / window
        return len(self.latencies_ns) / self.elapsed_s if self.elapsed_s > 0 else 0.0


async def _connect(spec: CellSpec) -> _Connection:
    loop = asyncio.get_running_loop()
    connecting = loop.create_connection(_Connection, spec.host, spec.port)
    _, conn = await asyncio.wait_for(connecting, spec.timeout_s)
    return conn


async def _run_phase(spec: CellSpec, raw: bytes, pool: list[_Connection | None],
                     max_requests: int, max_s: float) -> _Tally:
    tally = _Tally()
    deadline = time.perf_counter() + max_s

    async def worker(slot: int) -> None:
        while tally.attempted < max_requests and time.perf_counter() < deadline:
            tally.attempted += 1
            conn = pool[slot]
            if conn is None or conn.closed:
                try:
                    conn = await _connect(spec)
                except (OSError, TimeoutError) as exc:
                    tally.errors[f"connect: {type(exc).__name__}"] += 1
                    await asyncio.sleep(0.01)
                    continue
                pool[slot] = conn
                tally.reconnects += 1
            ex = await conn.exchange(raw, spec.stream, spec.timeout_s)
            if ex.error is not None:
                # A stream that broke after content reached the client cannot be retried by any proxy.
                tally.errors[f"{ex.error} (after content)" if ex.content_chunks else ex.error] += 1
            else:
                tally.latencies_ns.append(ex.t_end - ex.t_send)
                tally.ends_ns.append(ex.t_end)
                if spec.stream:
                    tally.ttfts_ns.append(ex.t_first - ex.t_send)
                    tally.chunks.append(ex.content_chunks)
            if ex.error is not None or not conn.keep_alive:
                conn.close()
                pool[slot] = None
        if not tally.stop_ns:
            tally.stop_ns = time.perf_counter_ns()

    tally.t0_ns, cpu0 = time.perf_counter_ns(), time.process_time()
    await asyncio.gather(*(worker(i) for i in range(spec.concurrency)))
    tally.elapsed_s = (time.perf_counter_ns() - tally.t0_ns) / 1e9
    tally.cpu_s = time.process_time() - cpu0
    return tally


def _quantile(sorted_values: Sequence[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default)."""
    if not sorted_values:
        return float("nan")
    pos = (len(sorted_values) - 1) * q
    lo = int(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


def _summary_ms(values_ns: list[int]) -> dict[str, float] | None:
    if not values_ns:
        return None
    ms = sorted(v / 1e6 for v in values_ns)
    return {
        "p50": _quantile(ms, 0.50), "p90": _quantile(ms, 0.90), "p99": _quantile(ms, 0.99),
        "p99.9": _quantile(ms, 0.999),
        "mean": sum(ms) / len(ms), "min": ms[0], "max": ms[-1],
    }


def _result(spec: CellSpec, tally: _Tally, warm: _Tally) -> dict[str, Any]:
    ok = len(tally.latencies_ns)
    return {
        "attempted": tally.attempted,
        "ok": ok,
        "errors": sum(tally.errors.values()),
        "error_kinds": dict(tally.errors),
        "elapsed_s": tally.elapsed_s,
        "rps": tally.rps(spec.concurrency),
        "rps_whole_phase": ok / tally.elapsed_s if tally.elapsed_s > 0 else 0.0,
        "latency_ms": _summary_ms(tally.latencies_ns),
        "ttft_ms": _summary_ms(tally.ttfts_ns) if spec.stream else None,
        "content_chunks": ({"min": min(tally.chunks), "max": max(tally.chunks),
                            "mean": sum(tally.chunks) / len(tally.chunks)} if tally.chunks else None),
        "reconnects": tally.reconnects,
        # Near 1.0 means the load generator itself may have been the bottleneck.
        "loadgen_cpu_utilisation": tally.cpu_s / tally.elapsed_s if tally.elapsed_s > 0 else 0.0,
        "warmup": {"attempted": warm.attempted, "errors": sum(warm.errors.values()),
                   "error_kinds": dict(warm.errors)},
    }


async def run_cell(spec: CellSpec, between: Callable[[dict[str, Any]], Awaitable[None]] | None = None
                   ) -> dict[str, Any]:
    """Warm up (not counted), call ``between`` with the warm-up outcome, then measure."""
    raw = request_bytes(spec)
    pool: list[_Connection | None] = [None] * spec.concurrency
    try:
        warm = (await _run_phase(spec, raw, pool, max(spec.warmup, spec.concurrency), spec.warmup_max_s)
                if spec.warmup > 0 else _Tally())
        if between is not None:
            await between({"attempted": warm.attempted, "errors": sum(warm.errors.values())})
        measured = await _run_phase(spec, raw, pool, spec.requests, spec.duration_s)
    finally:
        for conn in pool:
            if conn is not None:
                conn.close()
    return _result(spec, measured, warm)


def _new_loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    try:
        import uvloop
    except ImportError:
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def _send(msg: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(msg) + "\n")
    sys.stdout.flush()


def _serve() -> int:
    """JSON-lines protocol with the harness (see the module docstring)."""
    factory = _new_loop_factory()
    _send({"event": "hello", "uvloop": factory is not None})

    async def handshake(warm: dict[str, Any]) -> None:
        _send({"event": "warm", "warmup": warm})
        line = await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
        if json.loads(line or "{}").get("op") != "go":
            raise SystemExit(0)

    with asyncio.Runner(loop_factory=factory) as runner:
        while line := sys.stdin.readline():
            cmd = json.loads(line)
            if cmd.get("op") != "cell":
                break
            result = runner.run(run_cell(CellSpec(**cmd["spec"]), handshake))
            _send({"event": "result", "result": result})
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--serve", action="store_true", help="JSON-lines mode for gateway_overhead.py")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--model", default="bench-0ms")
    p.add_argument("--stream", action="store_true")
    p.add_argument("-c", "--concurrency", type=int, default=1)
    p.add_argument("-n", "--requests", type=int, default=1000)
    p.add_argument("-d", "--duration", type=float, default=10.0)
    p.add_argument("--warmup", type=int, default=50)
    p.add_argument("-H", "--header", action="append", default=[], help="'name: value'")
    args = p.parse_args(argv)
    if args.serve:
        return _serve()
    headers = dict(h.split(":", 1) for h in args.header)
    spec = CellSpec(host=args.host, port=args.port, model=args.model, stream=args.stream,
                    concurrency=args.concurrency, requests=args.requests, duration_s=args.duration,
                    warmup=args.warmup, headers={k.strip(): v.strip() for k, v in headers.items()})
    with asyncio.Runner(loop_factory=_new_loop_factory()) as runner:
        result = runner.run(run_cell(spec))
    print(json.dumps({"spec": asdict(spec), "result": result}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
