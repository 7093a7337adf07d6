"""``POST /v1/feedback``: a score or a thumbs up/down on the answer to one request.

Body: ``{"request_id": "req_…", "score": 0.8}`` (0–1) or ``{"request_id": "req_…", "thumbs": "up"}``;
an optional ``weight`` (how many observations it is worth, default 1).

Usage::

    request_id, feedback = parse_feedback(orjson.loads(body))
"""

from __future__ import annotations

import math
from typing import Any

from switchboard.errors import InvalidRequest
from switchboard.routing.bandit import Feedback

__all__ = ["parse_feedback"]


def parse_feedback(body: Any) -> tuple[str, Feedback]:
    """The request id and the feedback of a feedback body; :class:`InvalidRequest` naming the bad field."""
    if not isinstance(body, dict):
        raise InvalidRequest("The feedback body must be a JSON object.")
    rid = body.get("request_id")
    if not isinstance(rid, str) or not rid:
        raise InvalidRequest("'request_id' is required: the x-request-id of the answer.", param="request_id")
    unknown = set(body) - {"request_id", "score", "thumbs", "weight", "comment"}
    if unknown:
        raise InvalidRequest(f"Unknown field(s): {', '.join(sorted(unknown))}.", param=sorted(unknown)[0])
    weight = body.get("weight", 1.0)
    if isinstance(weight, bool) or not isinstance(weight, int | float) or not math.isfinite(weight) or weight < 0:
        raise InvalidRequest("'weight' must be a non-negative number.", param="weight")
    score, thumbs = body.get("score"), body.get("thumbs")
    if (score is None) == (thumbs is None):
        raise InvalidRequest("Give exactly one of 'score' (0 to 1) or 'thumbs' ('up' or 'down').", param="score")
    if score is not None:
        if isinstance(score, bool) or not isinstance(score, int | float) or not 0 <= score <= 1:
            raise InvalidRequest("'score' must be a number from 0 to 1.", param="score")
        return rid, Feedback.scored(float(score), float(weight))
    if thumbs not in ("up", "down"):
        raise InvalidRequest("'thumbs' must be 'up' or 'down'.", param="thumbs")
    return rid, Feedback.thumbs(up=thumbs == "up", weight=float(weight))
