"""Start, pin, probe and stop the processes of a benchmark run.

Every process is started in its own session (so a Ctrl-C in the terminal reaches only the harness,
which then stops them in order), pinned to the given CPUs, asked to die with the harness
(``PR_SET_PDEATHSIG``) in case the harness itself is killed, and logs to a file, never to a pipe
that could fill up.

Usage::

    with ServerProcess("sim", [sys.executable, ...], log_dir, cpus={0}) as sim:
        sim.wait_http_ok(port, "/health", timeout_s=30)
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from types import FrameType, TracebackType

__all__ = ["ServerProcess", "StartupError", "free_port", "preexec_for", "python_entry", "terminate_on_signals"]

_PR_SET_PDEATHSIG = 1


class StartupError(RuntimeError):
    """A server exited or never became ready; the message carries the tail of its log."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def python_entry(module: str, args: Sequence[str]) -> list[str]:
    """The argv that runs ``module.main(args)`` with this interpreter (no console script needed)."""
    code = f"import sys; from {module} import main; sys.exit(main(sys.argv[1:]))"
    return [sys.executable, "-c", code, *args]


@contextlib.contextmanager
def terminate_on_signals() -> Iterator[None]:
    """SIGTERM/SIGHUP end the run like Ctrl-C does, so every ``finally`` stops its processes."""

    def handler(signum: int, _frame: FrameType | None) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    old = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def preexec_for(cpus: set[int] | None) -> Callable[[], None]:
    """What runs in the child between fork and exec: pin it, and make it die with its parent."""

    def preexec() -> None:
        if cpus:
            os.sched_setaffinity(0, cpus)
        with contextlib.suppress(OSError, AttributeError):
            libc = ctypes.CDLL("libc.so.6", use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)

    return preexec


class ServerProcess:
    """A server subprocess of the run; stopping kills its whole process group."""

    def __init__(self, name: str, argv: Sequence[str], log_dir: Path, *, cpus: set[int] | None = None,
                 env: Mapping[str, str] | None = None, cwd: Path | None = None) -> None:
        self.name = name
        self.log_path = log_dir / f"{name}.log"
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            list(argv), stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT,
            env=dict(env) if env is not None else None, cwd=cwd, start_new_session=True,
            preexec_fn=preexec_for(cpus),
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def wait_http_ok(self, port: int, path: str, *, timeout_s: float, post: bytes | None = None,
                     headers: Mapping[str, str] | None = None) -> float:
        """Poll ``GET path`` (``POST`` of a JSON body if ``post``) until it answers 200; bounded.

        Returns the seconds it took.
        """
        t0 = time.monotonic()
        url = f"http://127.0.0.1:{port}{path}"
        hdrs = {"content-type": "application/json", **(headers or {})}
        last = "no answer"
        while True:
            if self.proc.poll() is not None:
                raise StartupError(f"{self.name} exited with code {self.proc.returncode}:\n{self.log_tail()}")
            req = urllib.request.Request(url, data=post, headers=hdrs, method="POST" if post else "GET")
            try:
                with urllib.request.urlopen(req, timeout=2) as resp:
                    if resp.status == 200:
                        return time.monotonic() - t0
            except urllib.error.HTTPError as exc:
                last = f"HTTP {exc.code}: {exc.read()[:300]!r}"
            except (urllib.error.URLError, OSError) as exc:
                last = str(exc)
            if time.monotonic() - t0 > timeout_s:
                raise StartupError(f"{self.name} not ready at {url} after {timeout_s:.0f}s ({last}):\n"
                                   f"{self.log_tail()}")
            time.sleep(0.1)

    def stop(self, grace_s: float = 5.0) -> None:
        """SIGTERM the process group, SIGKILL it after ``grace_s``; idempotent."""
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGCONT)
                os.killpg(self.proc.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(grace_s)
        # Leftover children in the group (the leader may be gone already).
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(grace_s)
        self._log.close()

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
