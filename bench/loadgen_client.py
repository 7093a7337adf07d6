"""The harness side of the load generator: a pinned subprocess driven over JSON lines.

Every read has a deadline, so a stuck load generator ends the run instead of hanging it.

Usage::

    with LoadGenProcess(cpus={0}) as lg:
        result = lg.run_cell(spec, between=lambda warm: sample_servers())
"""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from types import TracebackType
from typing import Any

from loadgen import CellSpec
from servers import preexec_for

__all__ = ["LoadGenError", "LoadGenProcess"]

_SCRIPT = Path(__file__).with_name("loadgen.py")


class LoadGenError(RuntimeError):
    """The load generator died, answered nonsense or took too long."""


class LoadGenProcess:
    """``bench/loadgen.py --serve`` in its own process (own session, pinned, dies with us)."""

    def __init__(self, *, cpus: set[int] | None = None, python: str = sys.executable) -> None:
        self._proc = subprocess.Popen(
            [python, str(_SCRIPT), "--serve"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            start_new_session=True, preexec_fn=preexec_for(cpus),
        )
        self._buf = b""
        hello = self._read(timeout_s=30)
        if hello.get("event") != "hello":
            raise LoadGenError(f"unexpected greeting {hello!r}")
        self.uvloop: bool = bool(hello.get("uvloop"))

    def _write(self, msg: dict[str, Any]) -> None:
        assert self._proc.stdin is not None
        try:
            self._proc.stdin.write(json.dumps(msg).encode() + b"\n")
            self._proc.stdin.flush()
        except BrokenPipeError:
            raise LoadGenError(f"load generator exited (code {self._proc.poll()})") from None

    def _read(self, timeout_s: float) -> dict[str, Any]:
        assert self._proc.stdout is not None
        fd = self._proc.stdout.fileno()
        deadline = time.monotonic() + timeout_s
        while b"\n" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise LoadGenError(f"no answer from the load generator within {timeout_s:.0f}s")
            ready, _, _ = select.select([fd], [], [], left)
            if ready:
                chunk = os.read(fd, 65536)
                if not chunk:
                    raise LoadGenError(f"load generator exited (code {self._proc.wait(5)})")
                self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        msg: dict[str, Any] = json.loads(line)
        return msg

    def run_cell(self, spec: CellSpec, between: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
        """Warm up, call ``between`` (not timed by the load generator), measure; return the result."""
        self._write({"op": "cell", "spec": asdict(spec)})
        warm = self._read(timeout_s=spec.warmup_max_s + spec.timeout_s + 30)
        if warm.get("event") != "warm":
            raise LoadGenError(f"expected warm-up report, got {warm!r}")
        between(warm["warmup"])
        self._write({"op": "go"})
        done = self._read(timeout_s=spec.duration_s + spec.timeout_s + 30)
        if done.get("event") != "result":
            raise LoadGenError(f"expected a result, got {done!r}")
        result: dict[str, Any] = done["result"]
        return result

    def close(self, *, graceful: bool = True) -> None:
        """Ask the load generator to exit (or kill it straight away if not ``graceful``)."""
        if self._proc.poll() is None and not graceful:
            self._proc.kill()
            self._proc.wait(5)
        if self._proc.poll() is None:
            try:
                self._write({"op": "exit"})
                self._proc.wait(5)
            except (LoadGenError, subprocess.TimeoutExpired):
                self._proc.kill()
                self._proc.wait(5)
        for stream in (self._proc.stdin, self._proc.stdout):
            if stream is not None:
                stream.close()

    def __enter__(self) -> LoadGenProcess:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close(graceful=exc_type is None)
