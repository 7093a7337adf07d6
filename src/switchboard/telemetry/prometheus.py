"""Prometheus metric families and their text exposition (format 0.0.4), without a client library.

A :class:`Family` holds the series of one metric in this process, keyed by a tuple of label values.
It keeps at most ``max_series`` of them: an observation for a new label set beyond that (or with a
label value longer than :data:`MAX_VALUE_LENGTH`) goes to one series whose labels all read
``other``, and is counted in :attr:`Family.overflowed`. A family exports a snapshot of plain lists
(JSON-safe, so other processes can read it); :func:`merge` adds snapshots of several processes up and
:func:`render` writes the result in the text format.

Usage::

    served = Family("app_requests_total", "counter", "Requests served.", ("route",))
    served.inc(("chat",))
    body = render([served], merge([served], [{served.name: served.snapshot()}]))
"""

from __future__ import annotations

import math
import re
from bisect import bisect_left
from collections.abc import Iterable, Mapping, Sequence
from typing import Literal

__all__ = [
    "CONTENT_TYPE",
    "MAX_VALUE_LENGTH",
    "OTHER",
    "Family",
    "Kind",
    "Merged",
    "Snapshot",
    "merge",
    "render",
]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
OTHER = "other"
MAX_VALUE_LENGTH = 100  # a longer label value is not from a bounded set: it goes to the ``other`` series

Kind = Literal["counter", "gauge", "histogram"]
Snapshot = list[tuple[list[str], list[float]]]
"""One family's series as ``(label values, values)`` pairs; JSON turns the tuples into lists."""
Merged = dict[str, dict[tuple[str, ...], list[float]]]
"""Family name → label values → values, summed (or maxed) over processes."""

_METRIC_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")


class Family:
    """The series of one metric in this process.

    A counter or gauge series is ``[value]``; a histogram series is ``[n_0, …, n_k, n_inf, sum]``,
    the number of observations that fell into each bucket (not cumulative) and their sum. Every
    kind adds up across processes (in-flight requests and queue depth too).

    Usage::

        latency = Family("app_latency_seconds", "histogram", "Latency.", ("route",), buckets=(0.1, 1.0))
        latency.observe(("chat",), 0.25)
    """

    __slots__ = ("_other", "_series", "_width", "buckets", "help", "kind", "labels", "max_series", "name",
                 "overflowed")

    def __init__(self, name: str, kind: Kind, help: str, labels: Sequence[str] = (), *,
                 buckets: Sequence[float] = (), max_series: int = 1000) -> None:
        if not _METRIC_NAME.fullmatch(name):
            raise ValueError(f"invalid metric name {name!r}")
        if (kind == "counter") != name.endswith("_total"):
            raise ValueError(f"{name}: counter names, and only they, end in _total")
        for label in labels:
            if not _LABEL_NAME.fullmatch(label) or label.startswith("__") or label == "le":
                raise ValueError(f"{name}: invalid label name {label!r}")
        if len(set(labels)) != len(labels):
            raise ValueError(f"{name}: duplicate label names")
        if kind == "histogram":
            if not buckets or list(buckets) != sorted(set(buckets)) or not all(math.isfinite(b) for b in buckets):
                raise ValueError(f"{name}: buckets must be finite and strictly increasing")
        elif buckets:
            raise ValueError(f"{name}: only histograms have buckets")
        if max_series < 1:
            raise ValueError("max_series must be at least 1")
        self.name = name
        self.kind = kind
        self.help = help
        self.labels = tuple(labels)
        self.buckets = tuple(float(b) for b in buckets)
        self.max_series = max_series
        self.overflowed = 0  # observations diverted to the ``other`` series
        self._width = len(self.buckets) + 2 if kind == "histogram" else 1
        self._series: dict[tuple[str, ...], list[float]] = {}
        self._other = (OTHER,) * len(self.labels)

    @property
    def width(self) -> int:
        """How many numbers one series holds."""
        return self._width

    def inc(self, key: tuple[str, ...], amount: float = 1.0) -> None:
        """Add ``amount`` to a counter (or gauge)."""
        series = self._series.get(key) or self._new(key)
        series[0] += amount

    def set(self, key: tuple[str, ...], value: float) -> None:
        """Set a gauge; or a counter copied from a source that counts by itself (it must not go down)."""
        series = self._series.get(key) or self._new(key)
        series[0] = value

    def observe(self, key: tuple[str, ...], value: float) -> None:
        """Count ``value`` into a histogram's bucket (``le`` is inclusive) and its sum."""
        series = self._series.get(key) or self._new(key)
        series[bisect_left(self.buckets, value)] += 1
        series[-1] += value

    def get(self, key: tuple[str, ...]) -> list[float] | None:
        """A copy of one series' numbers, or ``None`` if it has none yet."""
        series = self._series.get(key)
        return None if series is None else list(series)

    def has(self, key: tuple[str, ...]) -> bool:
        return key in self._series

    def snapshot(self) -> Snapshot:
        """A copy of every series, to merge with other processes' and render."""
        return [(list(key), list(values)) for key, values in self._series.items()]

    def _new(self, key: tuple[str, ...]) -> list[float]:
        if len(key) != len(self.labels):
            raise ValueError(f"{self.name}: expected {len(self.labels)} label values, got {len(key)}")
        if len(self._series) >= self.max_series or any(len(v) > MAX_VALUE_LENGTH for v in key):
            self.overflowed += 1
            key = self._other
            existing = self._series.get(key)
            if existing is not None:
                return existing
        series = [0.0] * self._width
        self._series[key] = series
        return series


def merge(families: Iterable[Family], snapshots: Iterable[tuple[Mapping[str, object], bool]]) -> Merged:
    """Add up ``(snapshot, live)`` pairs, a snapshot being family name → :data:`Snapshot`.

    Counters and histograms add up over every snapshot: a worker that has gone keeps what it
    counted. Gauges add up over the ``live`` snapshots only.
    Series that do not fit the family (a file from another version) are ignored.
    """
    known = list(families)
    out: Merged = {f.name: {} for f in known}
    pending = list(snapshots)
    for family in known:
        acc = out[family.name]
        for snapshot, live in pending:
            if family.kind == "gauge" and not live:
                continue
            series = snapshot.get(family.name)
            if not isinstance(series, list):
                continue
            for item in series:
                parsed = _series_item(item, len(family.labels), family.width)
                if parsed is None:
                    continue
                key, values = parsed
                total = acc.get(key)
                if total is None:
                    acc[key] = values
                else:
                    for i, v in enumerate(values):
                        total[i] += v
    return out


def _series_item(item: object, n_labels: int, width: int) -> tuple[tuple[str, ...], list[float]] | None:
    if not isinstance(item, (list, tuple)) or len(item) != 2:
        return None
    labels, values = item
    if not isinstance(labels, list) or len(labels) != n_labels or not all(isinstance(v, str) for v in labels):
        return None
    if not isinstance(values, list) or len(values) != width:
        return None
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        return None
    return tuple(labels), [float(v) for v in values]


def render(families: Iterable[Family], merged: Merged) -> bytes:
    """The text exposition of ``merged``: every family with ``# HELP`` and ``# TYPE``, even when empty."""
    lines: list[str] = []
    for family in families:
        name = family.name
        lines.append(f"# HELP {name} {_escape_help(family.help)}")
        lines.append(f"# TYPE {name} {family.kind}")
        series = merged.get(family.name, {})
        for key in sorted(series):
            values = series[key]
            pairs = [f'{label}="{_escape_value(value)}"' for label, value in zip(family.labels, key, strict=True)]
            if family.kind != "histogram":
                lines.append(f"{name}{_braces(pairs)} {_number(values[0])}")
                continue
            cumulative = 0.0
            for bound, count in zip((*family.buckets, math.inf), values[:-1], strict=True):
                cumulative += count
                le = 'le="' + _number(bound) + '"'
                lines.append(f"{name}_bucket{_braces([*pairs, le])} {_number(cumulative)}")
            lines.append(f"{name}_sum{_braces(pairs)} {_number(values[-1])}")
            lines.append(f"{name}_count{_braces(pairs)} {_number(cumulative)}")
    lines.append("")
    return "\n".join(lines).encode()


def _braces(pairs: list[str]) -> str:
    return "{" + ",".join(pairs) + "}" if pairs else ""


def _number(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return repr(value)


def _escape_value(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")
