"""RecordQuery: the reference meaning of each filter, shared by every backend."""

from __future__ import annotations

import pytest

from switchboard.storage.records import RecordQuery
from tests.storage.sample_records import make_record

REC = make_record(0, status=200, caller="team-a", public_model="fast", deployment="sim/small")


@pytest.mark.parametrize(
    ("q", "hit"),
    [
        (RecordQuery(), True),
        (RecordQuery(since=REC.started_at), True),
        (RecordQuery(since=REC.started_at + 0.001), False),
        (RecordQuery(until=REC.started_at), False),
        (RecordQuery(until=REC.started_at + 0.001), True),
        (RecordQuery(public_model="fast"), True),
        (RecordQuery(public_model="smart"), False),
        (RecordQuery(deployment="sim/small"), True),
        (RecordQuery(deployment="sim/tiny"), False),
        (RecordQuery(status=200), True),
        (RecordQuery(status=500), False),
        (RecordQuery(only_errors=True), False),
        (RecordQuery(caller="team-a"), True),
        (RecordQuery(caller="team-b"), False),
        (RecordQuery(request_id=REC.request_id), True),
        (RecordQuery(request_id="other"), False),
    ],
)
def test_each_filter(q: RecordQuery, hit: bool) -> None:
    assert q.matches(REC) is hit


@pytest.mark.parametrize(
    ("status", "partial", "is_error"),
    [(200, False, False), (399, False, False), (400, False, True), (503, False, True), (200, True, True)],
)
def test_errors_are_failed_statuses_and_cut_streams(status: int, partial: bool, is_error: bool) -> None:
    assert RecordQuery(only_errors=True).matches(make_record(0, status=status, partial=partial)) is is_error
