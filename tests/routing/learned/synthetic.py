"""A small synthetic outcome set: ``big`` (expensive) solves maths and chat, ``small`` (cheap) only chat."""

from __future__ import annotations

import json
from pathlib import Path

_MATH = ["integral", "derivative", "matrix", "eigenvalue", "prime", "polynomial", "theorem", "logarithm"]
_CHAT = ["weather", "holiday", "recipe", "movie", "garden", "music", "coffee", "weekend"]


def synthetic_lines(n: int = 48) -> list[dict[str, object]]:
    lines: list[dict[str, object]] = []
    for i in range(n):
        if i % 2:
            w = _MATH[i % len(_MATH)]
            prompt = f"Compute the {w} of problem {i} and prove the {_MATH[(i + 3) % len(_MATH)]} step."
            big, small = 1.0, 0.0
        else:
            w = _CHAT[i % len(_CHAT)]
            prompt = f"Tell me something nice about the {w}, friend {i}, and the {_CHAT[(i + 3) % len(_CHAT)]}."
            big, small = 1.0, 1.0
        lines.append({"prompt": prompt, "task": "math" if i % 2 else "chat",
                      "outcomes": {"big": {"score": big, "cost": 0.01}, "small": {"score": small, "cost": 0.001}}})
    return lines


def write_synthetic(path: Path, n: int = 48) -> Path:
    path.write_text("\n".join(json.dumps(x) for x in synthetic_lines(n)) + "\n", encoding="utf-8")
    return path
