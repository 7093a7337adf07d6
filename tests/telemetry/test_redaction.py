"""Secrets and personal data of a recognisable shape are removed from text the gateway keeps."""

from __future__ import annotations

from pathlib import Path

import pytest

from switchboard.telemetry.redaction import redact

CANARIES = {
    "sk-proj-abcdefghijklmnop1234567890": "api_key",
    "sk-ant-api03-ZZZZyyyyXXXXwwww1234": "api_key",
    "AIzaSyA1234567890abcdefghijklmnopqrstuv": "api_key",
    "AKIAIOSFODNN7EXAMPLE": "api_key",
    "Bearer abcdefghijkl.mnop": "bearer",
    "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U": "jwt",
    "alice.smith+test@example.co.uk": "email",
    "4111 1111 1111 1111": "card",
    "DE89 3704 0044 0532 0130 00": "iban",
    "192.168.10.254": "ip",
    "+44 20 7946 0958": "phone",
}


@pytest.mark.parametrize(("canary", "kind"), sorted(CANARIES.items()))
def test_each_kind_is_redacted(canary: str, kind: str) -> None:
    out = redact(f"before {canary} after")
    assert canary not in out and f"[REDACTED:{kind}]" in out
    assert out.startswith("before ") and out.endswith(" after")


def test_credentials_keep_their_name() -> None:
    assert redact("api_key=hunter2secret and password: 'swordfish9'") == (
        "api_key=[REDACTED:credential] and password: [REDACTED:credential]'")


def test_lookalikes_are_left_alone() -> None:
    text = "Order 1234 5678 9012 3456 shipped; version 1.2.3.4a; call me maybe; GB00 is not an IBAN"
    assert redact("Order 4111 1111 1111 1112 shipped") == "Order 4111 1111 1111 1112 shipped"  # fails Luhn
    assert "GB00 is not an IBAN" in redact(text)
    assert redact("The answer is 42 and the year is 2026.") == "The answer is 42 and the year is 2026."


def test_captured_prompts_are_redacted_before_they_are_stored(tmp_path: Path) -> None:
    from switchboard.config.model import RecordsConfig
    from switchboard.storage.records import RecordQuery
    from switchboard.storage.sqlite import SQLiteRecordWriter
    from switchboard.telemetry.record import RequestRecord

    path = tmp_path / "r.db"
    secret = "sk-proj-abcdefghijklmnop1234567890"
    route = {"model": "m", "input": {"prompt": f"my key is {secret}", "last_user": "mail bob@example.com",
                                     "prompt_tokens": 9}}
    with SQLiteRecordWriter(RecordsConfig(path=str(path))) as writer:
        writer.submit(RequestRecord("r1", 1.0, "chat", "openai", router="auto", route=route))
        assert writer.flush(10)
        (stored,) = writer.query(RecordQuery(request_id="r1"))
    assert stored.route is not None and stored.route["input"] == {
        "prompt": "my key is [REDACTED:api_key]", "last_user": "mail [REDACTED:email]", "prompt_tokens": 9}
    stored_bytes = b"".join(f.read_bytes() for f in path.parent.iterdir() if f.name.startswith("r.db"))
    assert b"r1" in stored_bytes and secret.encode() not in stored_bytes  # the database and its WAL
    assert route["input"]["prompt"] == f"my key is {secret}"  # the in-memory record is not modified
