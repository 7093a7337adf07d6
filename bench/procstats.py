"""CPU time and memory of a server process and its descendants, read from ``/proc`` (Linux only).

CPU is ``utime + stime + cutime + cstime`` summed over the live process tree, so a child that
exits between two samples still counts (its time moves into its parent's ``cutime``/``cstime``).

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


def _cpu_ticks(pid: int) -> int:
    try:
        raw = (_PROC / str(pid) / "stat").read_text()
    except OSError:
        return 0
    # The command name (field 2) may contain spaces and parentheses: split after the last ')'.
    fields = raw[raw.rindex(")") + 2 :].split()
    # fields[0] is field 3 (state); utime, stime, cutime, cstime are fields 14–17.
    return sum(int(f) for f in fields[11:15])


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
    ticks = sum(_cpu_ticks(p) for p in pids)
    mem = [_memory(p) for p in pids]
    return TreeSample(
        pids=tuple(pids),
        cpu_s=ticks / _TICKS_PER_S,
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
