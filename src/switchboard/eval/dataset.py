"""Outcome datasets: prompts with, for each model, a quality score in [0, 1] and the dollar cost of the call.

Two file formats load into the same :class:`OutcomeSet`:

- **RouterBench CSV** (``*.csv``): one row per prompt; ``prompt`` holds a Python list literal whose first item
  is the prompt text; ``eval_name`` is the task; a column per model holds its 0/1 correctness and
  ``<model>|total_cost`` its cost. Rows with an empty correctness or cost cell are dropped.
- **JSONL** (``*.jsonl``, for your own logged traffic): one object per line,
  ``{"prompt": "...", "task": "optional", "outcomes": {"<model>": {"score": 0.0-1.0, "cost": dollars}}}``.
  A model missing from a line is a missing outcome (NaN): training skips it, evaluation drops the line.

Usage::

    data = load_outcomes(expand_paths(["data/*_train.csv", "mine.jsonl"]))
    print(data.models, len(data))
"""

from __future__ import annotations

import ast
import csv
import glob
import json
import math
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

__all__ = ["DatasetError", "OutcomeSet", "expand_paths", "load_outcomes", "require_numpy"]

_COST_SUFFIX = "|total_cost"


class DatasetError(ValueError):
    """A dataset file is missing, unreadable or not in a known format; the message says which and where."""


def require_numpy() -> Any:
    """Import numpy, or fail with the install hint (numpy comes with the ``routing`` extra)."""
    try:
        import numpy
    except ImportError:  # pragma: no cover - numpy is installed in the test environment
        raise ImportError(
            "the learned router and router evaluation need numpy: pip install 'switchboard[routing]'"
        ) from None
    return numpy


@dataclass(frozen=True, eq=False)
class OutcomeSet:
    """Prompts × models: ``scores[i, j]`` is model j's quality on prompt i (NaN when unknown), ``costs[i, j]``
    its dollar cost. ``groups`` keys rows that must stay on the same side of a cross-validation split;
    ``sources`` names the file each row came from."""

    models: tuple[str, ...]
    prompts: tuple[str, ...]
    tasks: tuple[str, ...]
    groups: tuple[str, ...]
    sources: tuple[str, ...]
    scores: npt.NDArray[np.float64]
    costs: npt.NDArray[np.float64]

    def __len__(self) -> int:
        return len(self.prompts)

    def rows(self, index: Sequence[int] | npt.NDArray[np.intp]) -> OutcomeSet:
        """The subset of rows at ``index``, in that order."""
        idx = [int(i) for i in index]
        return OutcomeSet(
            models=self.models,
            prompts=tuple(self.prompts[i] for i in idx),
            tasks=tuple(self.tasks[i] for i in idx),
            groups=tuple(self.groups[i] for i in idx),
            sources=tuple(self.sources[i] for i in idx),
            scores=self.scores[idx],
            costs=self.costs[idx],
        )

    def select_models(self, models: Sequence[str]) -> OutcomeSet:
        """The same rows with only ``models``, in that order."""
        missing = [m for m in models if m not in self.models]
        if missing:
            raise DatasetError(f"model(s) not in the data: {', '.join(missing)}; it has: {', '.join(self.models)}")
        cols = [self.models.index(m) for m in models]
        return OutcomeSet(tuple(models), self.prompts, self.tasks, self.groups, self.sources,
                          self.scores[:, cols], self.costs[:, cols])

    def complete(self) -> OutcomeSet:
        """Only the rows where every model has an outcome (what evaluation needs)."""
        np_ = require_numpy()
        keep = np_.flatnonzero(~(np_.isnan(self.scores).any(axis=1) | np_.isnan(self.costs).any(axis=1)))
        return self if len(keep) == len(self) else self.rows(keep)


def expand_paths(patterns: Iterable[str]) -> list[Path]:
    """Files named by ``patterns`` (paths or globs), sorted within each glob; an unmatched one is an error."""
    out: list[Path] = []
    for pattern in patterns:
        if glob.has_magic(pattern):
            matches = sorted(glob.glob(pattern))
            if not matches:
                raise DatasetError(f"no file matches {pattern}")
            out.extend(Path(m) for m in matches)
        else:
            path = Path(pattern)
            if not path.is_file():
                raise DatasetError(f"no such file: {pattern}")
            out.append(path)
    return out


def load_outcomes(paths: Iterable[str | Path]) -> OutcomeSet:
    """Load and pool outcome files (``.csv`` RouterBench, ``.jsonl`` logged traffic); models are the union,
    in order of first appearance, with NaN where a file lacks a model."""
    np_ = require_numpy()
    files = [Path(p) for p in paths]
    if not files:
        raise DatasetError("no data files given")
    records: list[tuple[str, str, str, str, dict[str, tuple[float, float]]]] = []
    for path in files:
        if not path.is_file():
            raise DatasetError(f"no such file: {path}")
        if path.suffix.lower() == ".csv":
            records.extend(_read_csv(path))
        elif path.suffix.lower() in (".jsonl", ".json", ".ndjson"):
            records.extend(_read_jsonl(path))
        else:
            raise DatasetError(f"{path}: unknown format (expected .csv in the RouterBench shape or .jsonl)")
    if not records:
        raise DatasetError(f"no usable rows in {', '.join(str(f) for f in files)}")
    models: dict[str, None] = {}
    for record in records:
        models.update(dict.fromkeys(record[4]))
    names = tuple(models)
    scores = np_.full((len(records), len(names)), np_.nan)
    costs = np_.full((len(records), len(names)), np_.nan)
    col = {m: j for j, m in enumerate(names)}
    for i, (*_, outcomes) in enumerate(records):
        for model, (score, cost) in outcomes.items():
            scores[i, col[model]] = score
            costs[i, col[model]] = cost
    return OutcomeSet(
        models=names,
        prompts=tuple(r[0] for r in records),
        tasks=tuple(r[1] for r in records),
        groups=tuple(r[2] for r in records),
        sources=tuple(r[3] for r in records),
        scores=scores,
        costs=costs,
    )


def _read_csv(path: Path) -> list[tuple[str, str, str, str, dict[str, tuple[float, float]]]]:
    csv.field_size_limit(sys.maxsize)
    try:
        with path.open(newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            header = reader.fieldnames or []
            models = [c[: -len(_COST_SUFFIX)] for c in header if c.endswith(_COST_SUFFIX)]
            models = [m for m in models if m in header]
            if "prompt" not in header or not models:
                raise DatasetError(f"{path}: not a RouterBench CSV (needs a prompt column, and <model> and "
                                   f"<model>{_COST_SUFFIX} columns)")
            out = []
            for line, row in enumerate(reader, start=2):
                prompt = _csv_prompt(row.get("prompt") or "", path, line)
                outcomes: dict[str, tuple[float, float]] = {}
                for m in models:
                    score, cost = (row.get(m) or "").strip(), (row.get(m + _COST_SUFFIX) or "").strip()
                    if not score or not cost:
                        break
                    outcomes[m] = (_number(score, path, line, m), _number(cost, path, line, m + _COST_SUFFIX))
                else:
                    task = row.get("eval_name") or ""
                    out.append((prompt, task, (row.get("sample_id") or "") or f"prompt:{prompt}", str(path),
                                outcomes))
            return out
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DatasetError(f"{path}: cannot read it as CSV: {exc}") from None


def _csv_prompt(cell: str, path: Path, line: int) -> str:
    text = cell.strip()
    if text.startswith("["):
        try:
            value = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            raise DatasetError(f"{path}:{line}: the prompt cell is not a Python list literal") from None
        if isinstance(value, list) and value and isinstance(value[0], str):
            return value[0]
        raise DatasetError(f"{path}:{line}: the prompt cell should be a list whose first item is the prompt")
    return cell


def _number(text: str, path: Path, line: int, column: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise DatasetError(f"{path}:{line}: {column} is not a number: {text[:40]!r}") from None
    if not math.isfinite(value):
        raise DatasetError(f"{path}:{line}: {column} is not finite")
    return value


def _read_jsonl(path: Path) -> list[tuple[str, str, str, str, dict[str, tuple[float, float]]]]:
    out = []
    try:
        with path.open(encoding="utf-8") as f:
            for line_no, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise DatasetError(f"{path}:{line_no}: not JSON: {exc.msg}") from None
                out.append(_jsonl_record(obj, path, line_no))
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{path}: cannot read it: {exc}") from None
    return out


def _jsonl_record(obj: object, path: Path, line: int) -> tuple[str, str, str, str, dict[str, tuple[float, float]]]:
    where = f"{path}:{line}"
    if not isinstance(obj, dict) or not isinstance(obj.get("prompt"), str):
        raise DatasetError(f'{where}: expected an object with a "prompt" string')
    outcomes_obj = obj.get("outcomes")
    if not isinstance(outcomes_obj, dict) or not outcomes_obj:
        raise DatasetError(f'{where}: expected "outcomes": {{"<model>": {{"score": 0..1, "cost": dollars}}}}')
    outcomes: dict[str, tuple[float, float]] = {}
    for model, o in outcomes_obj.items():
        if not isinstance(o, dict):
            raise DatasetError(f"{where}: the outcome of {model} must be an object with score and cost")
        score, cost = o.get("score"), o.get("cost")
        if isinstance(score, bool) or not isinstance(score, int | float) or not 0 <= score <= 1:
            raise DatasetError(f"{where}: the score of {model} must be a number in [0, 1]")
        if isinstance(cost, bool) or not isinstance(cost, int | float) or not math.isfinite(cost) or cost < 0:
            raise DatasetError(f"{where}: the cost of {model} must be a non-negative number of dollars")
        outcomes[model] = (float(score), float(cost))
    task = obj.get("task")
    prompt: str = obj["prompt"]
    return prompt, task if isinstance(task, str) else "", f"prompt:{prompt}", str(path), outcomes
