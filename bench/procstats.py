"""CPU time and memory of a server process and its descendants, read from ``/proc`` (Linux only).

CPU is the scheduler's own run time of every thread (``/proc/PID/task/TID/schedstat``, nanoseconds)
summed over the live process tree, plus ``cutime + cstime`` of exited children. The tick-sampled
``utime``/``stime`` are used only where schedstat is missing: at low request rates they are biased
(a process that wakes on a timer can be charged whole ticks it barely used — on this machine it made
the idle-heavy cells read several times the true CPU, for every target alike).

Usage::

    before = sample_tree(pid)
    ...
    after = sample_tree(pid)
    cpu_seconds = after.cpu_s - before.cpu_s
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

__all__ = ["TreeSample", "descendants", "reset_peak_rss", "sample_tree"]

_PROC = Path("/proc")
_TICKS_PER_S = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


@dataclass(frozen=True, slots=True)
class TreeSample:
    """One reading of a process tree: CPU seconds so far, current and peak resident memory (bytes)."""

    pids: tuple[int, ...]
    cpu_s: float
    rss_bytes: int
    peak_rss_bytes: int


def _children(pid: int) -> list[int]:
    kids: list[int] = []
    try:
        tasks = list((_PROC / str(pid) / "task").iterdir())
    except OSError:
        return kids
    for task in tasks:
        try:
            kids += [int(x) for x in (task / "children").read_text().split()]
        except OSError:
            continue
    return kids


def descendants(pid: int) -> list[int]:
    """``pid`` followed by every live descendant (breadth first)."""
    seen = [pid]
    i = 0
    while i < len(seen):
        seen += [c for c in _children(seen[i]) if c not in seen]
        i += 1
    return seen


def _stat_fields(pid: int) -> list[str]:
    try:
        raw = (_PROC / str(pid) / "stat").read_text()
    except OSError:
        return []
    # The command name (field 2) may contain spaces and parentheses: split after the last ')'.
    # fields[0] is field 3 (state); utime, stime, cutime, cstime are fields 14–17.
    return raw[raw.rindex(")") + 2 :].split()


def _cpu_s(pid: int) -> float:
    """Run time of ``pid``'s threads (schedstat, ns precision) plus its exited children's CPU."""
    fields = _stat_fields(pid)
    if not fields:
        return 0.0
    children = (int(fields[13]) + int(fields[14])) / _TICKS_PER_S
    run_ns = 0
    try:
        tasks = list((_PROC / str(pid) / "task").iterdir())
        for task in tasks:
            run_ns += int((task / "schedstat").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return sum(int(f) for f in fields[11:15]) / _TICKS_PER_S
    return run_ns / 1e9 + children


def _memory(pid: int) -> tuple[int, int]:
    rss = hwm = 0
    try:
        lines = (_PROC / str(pid) / "status").read_text().splitlines()
    except OSError:
        return 0, 0
    for line in lines:
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1]) * 1024
        elif line.startswith("VmHWM:"):
            hwm = int(line.split()[1]) * 1024
    return rss, hwm


def sample_tree(pid: int) -> TreeSample:
    """Read CPU time and memory of ``pid`` and its live descendants."""
    pids = descendants(pid)
    cpu = sum(_cpu_s(p) for p in pids)
    mem = [_memory(p) for p in pids]
    return TreeSample(
        pids=tuple(pids),
        cpu_s=cpu,
        rss_bytes=sum(r for r, _ in mem),
        peak_rss_bytes=sum(h for _, h in mem),
    )


def reset_peak_rss(pid: int) -> bool:
    """Reset VmHWM of the tree to the current RSS (``clear_refs`` 5); False if the kernel refused."""
    ok = True
    for p in descendants(pid):
        try:
            (_PROC / str(p) / "clear_refs").write_text("5")
        except OSError:
            ok = False
    return ok
