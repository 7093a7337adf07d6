"""The PII detectors find personal data and secrets of a recognisable shape, and leave look-alikes alone."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from switchboard.config.governance import PII_KINDS
from switchboard.policy.pii import Finding, find_pii, redact_text, replace_findings, resolve_overlaps

FOUND = [
    ("email", "email", "alice.smith+test@example.co.uk"),
    ("phone", "phone", "+44 20 7946 0958"),
    ("phone", "phone", "+1 (555) 123-4567"),
    ("phone", "phone", "0044 20 7946 0958"),
    ("phone", "phone", "(555) 123-4567"),
    ("phone", "phone", "555-123-4567"),
    ("phone", "phone", "020 7946 0958"),
    ("phone", "phone", "06 12 34 56 78"),
    ("phone", "phone", "01.23.45.67.89"),
    ("phone", "phone", "612 34 56 78"),
    ("card", "card", "4111 1111 1111 1111"),
    ("card", "card", "5500-0000-0000-0004"),
    ("card", "card", "378282246310005"),
    ("iban", "iban", "DE89 3704 0044 0532 0130 00"),
    ("iban", "iban", "GB82WEST12345698765432"),
    ("iban", "iban", "FR14 2004 1010 0505 0001 3M02 606"),
    ("ip", "ipv4", "192.168.10.254"),
    ("ip", "ipv4", "8.8.8.8"),
    ("ip", "ipv6", "2001:db8:85a3::8a2e:370:7334"),
    ("ip", "ipv6", "2001:0db8:0000:0000:0000:ff00:0042:8329"),
    ("national_id", "us_ssn", "536-22-8726"),
    ("national_id", "uk_nino", "AB 12 34 56 C"),
    ("national_id", "uk_nino", "AB123456C"),
    ("national_id", "es_dni", "12345678Z"),
    ("national_id", "es_dni", "X1234567L"),
    ("secret", "api_key", "sk-proj-abcdefghijklmnop1234567890"),
    ("secret", "api_key", "sk-ant-api03-ZZZZyyyyXXXXwwww1234"),
    ("secret", "api_key", "sk-sb-Q2h1bmt5TW9ua2V5QnVzaW5lc3M"),
    ("secret", "api_key", "AIzaSyA1234567890abcdefghijklmnopqrstuv"),
    ("secret", "api_key", "AKIAIOSFODNN7EXAMPLE"),
    ("secret", "api_key", "sk_live_4eC39HqLyjWDarjtT1zdp7dc"),
    ("secret", "jwt", "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U"),
    ("secret", "github_token", "ghp_" + "aB3" * 12),
    ("secret", "github_token", "github_pat_11ABCDEFG0123456789_abcdefghijklmnop"),
    ("secret", "slack_token", "xoxb-123456789012-abcdefABCDEF"),
]


@pytest.mark.parametrize(("kind", "label", "value"), FOUND)
def test_each_kind_is_found_in_context(kind: str, label: str, value: str) -> None:
    text = f"Before {value} after."
    (finding,) = find_pii(text)
    assert (finding.kind, finding.label, finding.value) == (kind, label, value)
    assert text[finding.start:finding.end] == value


@pytest.mark.parametrize(
    ("text", "value", "label"),
    [
        ("api_key=hunter2secret", "hunter2secret", "credential"),
        ("password: 'swordfish9'", "swordfish9", "credential"),
        ('{"client_secret": "Zx9-abc_DEF"}', "Zx9-abc_DEF", "credential"),
        ("DB_PASSWORD=c0rrect-h0rse", "c0rrect-h0rse", "credential"),
        ("postgres://bob:s3cretpw@db.example.com/app", "s3cretpw", "credential"),
        ("Authorization: Bearer abcdefghijkl.mnop", "abcdefghijkl.mnop", "bearer"),
        ("Authorization: Basic dXNlcjpwYXNzd29yZA==", "dXNlcjpwYXNzd29yZA==", "basic"),
        ("BSN: 111222333", "111222333", "nl_bsn"),
    ],
)
def test_context_bound_findings_cover_only_the_value(text: str, value: str, label: str) -> None:
    (finding,) = find_pii(text)
    assert (finding.value, finding.label) == (value, label)


def test_private_key_blocks_are_found_whole() -> None:
    block = ("-----BEGIN RSA PRIVATE KEY-----\nMIIEpAIBAAKCAQEA0Z3VS5JJcds3xfn/ygWyF8PbnGy0AHB7MqXq\n"
             "-----END RSA PRIVATE KEY-----")
    (finding,) = find_pii(f"here:\n{block}\nthanks")
    assert finding.value == block and finding.label == "private_key"


@pytest.mark.parametrize(
    "text",
    [
        "The answer is 42 and the year is 2026.",
        "Order 4111 1111 1111 1112 shipped",  # fails Luhn
        "Order 1234 5678 9012 3456 7890 shipped",  # too long for a card, not a phone
        "0000 0000 0000 0000",  # passes Luhn, but a placeholder
        "GB00 is not an IBAN; neither is DE00 3704 0044 0532 0130 00",  # checksum
        "Meet on 2024-01-15 or 15.01.2024 at 10:30:45",
        "version 10.0.19041.1234 and 1.2.3.4a",
        "ids 1234567890 and 123456789 and 12345678",  # bare digit runs: not phones
        "1 234 567 890 units sold",
        "SSNs that cannot exist: 000-12-3456, 666-12-3456, 912-34-5678",
        "QQ 12 34 56 C is the NINO format, not a NINO",
        "12345678A has the wrong DNI letter",
        "111222333 is a valid BSN number, but nothing says it is one",
        "a[1::2], std::vector, 00:1A:2B:3C:4D:5E",
        "localhost 127.0.0.1, any 0.0.0.0, mask 255.255.255.0",
        "password: required; token: none; the secret: kindness",
        "token = tokenizer.encode(text); api_key = os.environ['KEY']; password=${DB_PASSWORD}",
        "Bearer authentication is described in RFC 6750.",
        "pip install sk-learn-is-not-a-real-package-name",
        "mail me at bob at example dot com",
        "max_tokens=1024 and num_tokens: 512",
    ],
)
def test_lookalikes_are_left_alone(text: str) -> None:
    assert find_pii(text) == []


def test_secrets_win_over_what_they_contain() -> None:
    (finding,) = find_pii("password=4111111111111111")
    assert finding.kind == "secret"
    (iban,) = find_pii("IBAN DE89370400440532013000")
    assert iban.kind == "iban"
    text = "OPENAI_API_KEY=sk-proj-abcdefghijklmnop1234567890"
    (key,) = find_pii(text)
    assert key.label == "api_key" and key.value.startswith("sk-proj")


def test_kinds_select_what_is_looked_for() -> None:
    text = "bob@example.com, +44 20 7946 0958, 4111 1111 1111 1111"
    assert [f.kind for f in find_pii(text)] == ["email", "phone", "card"]
    assert [f.kind for f in find_pii(text, ("phone",))] == ["phone"]
    assert find_pii(text, ()) == [] and find_pii("") == []


def test_redact_text() -> None:
    text, findings = redact_text("mail bob@example.com or call +44 20 7946 0958")
    assert text == "mail [REDACTED:email] or call [REDACTED:phone]" and len(findings) == 2
    custom, _ = redact_text("mail bob@example.com", placeholder=lambda f: f"<{f.kind}>")
    assert custom == "mail <email>"
    assert redact_text("nothing here") == ("nothing here", [])


def test_resolve_overlaps_keeps_the_specific_then_the_longer() -> None:
    phone = Finding("phone", 0, 10, "x" * 10)
    card = Finding("card", 2, 8, "x" * 6)
    email = Finding("email", 20, 30, "x" * 10)
    longer_email = Finding("email", 18, 32, "x" * 14)
    assert resolve_overlaps([phone, card, email, longer_email]) == [card, longer_email]
    assert replace_findings("0123456789", [card], lambda f: "#") == "01#89"


# ------------------------------------------------------------------------------------------ properties


def _luhn_complete(body: str) -> str:
    for check in "0123456789":
        digits = body + check
        total = sum(
            (d * 2 - 9 if d * 2 > 9 else d * 2) if i % 2 else d
            for i, d in enumerate(int(c) for c in reversed(digits)))
        if total % 10 == 0:
            return digits
    raise AssertionError("unreachable")


@st.composite
def cards(draw: st.DrawFn) -> str:
    length = draw(st.integers(13, 19))
    body = draw(st.sampled_from("3456")) + draw(st.text("0123456789", min_size=length - 2, max_size=length - 2))
    digits = _luhn_complete(body)
    assume(len(set(digits)) > 1)
    sep = draw(st.sampled_from(["", " ", "-"]))
    return sep.join(digits[i:i + 4] for i in range(0, len(digits), 4))


emails = st.builds(
    lambda local, labels, tld: f"{local}@{'.'.join(labels)}.{tld}",
    st.from_regex(r"[a-z0-9]([a-z0-9._+-]{0,12}[a-z0-9])?", fullmatch=True),
    st.lists(st.from_regex(r"[a-z0-9]([a-z0-9-]{0,8}[a-z0-9])?", fullmatch=True), min_size=1, max_size=3),
    st.from_regex(r"[a-z]{2,6}", fullmatch=True),
)
words = st.sampled_from(["hello", "the", "invoice", "for", "call", "me", "at", "and", "pay", "to", "Bob", "—", "!"])


@given(st.lists(st.tuples(words, st.one_of(cards(), emails)), min_size=1, max_size=6))
def test_redaction_never_leaves_a_card_or_an_email(pairs: list[tuple[str, str]]) -> None:
    text = " ".join(f"{w} {v}" for w, v in pairs)
    redacted, findings = redact_text(text)
    for _, value in pairs:
        assert value not in redacted
    assert len(findings) == len(pairs)


@given(st.text(alphabet=st.sampled_from("ab1 2-.@:+()/=_\n9eyJskAIz"), max_size=200) | st.text(max_size=200))
def test_findings_are_exact_sorted_and_disjoint(text: str) -> None:
    findings = find_pii(text)
    for f in findings:
        assert text[f.start:f.end] == f.value and f.kind in PII_KINDS
    for a, b in itertools.pairwise(findings):
        assert a.end <= b.start


def test_large_adversarial_inputs_are_scanned() -> None:
    # Linear-time patterns: each of these finishes promptly; a pattern that backtracks would hit the suite's
    # timeout (timings themselves belong in bench/).
    n = 1_000_000
    for text in ("a" * n, "1" * n, "1 " * (n // 2), "1-" * (n // 2), "a@" * (n // 2), "x@" + "b." * (n // 2),
                 ("a" * 50 + "@") * (n // 51), "ab:" * (n // 3), "sk-" * (n // 3), "bearer " * (n // 7),
                 "password: " + "a" * n, "a_" * (n // 2), "DE89 " * (n // 5), "(1" * (n // 2), "+1 " * (n // 3),
                 "-----BEGIN PRIVATE KEY-----" * (n // 27), "1.1." * (n // 4), "ab://" * (n // 5)):
        assert isinstance(find_pii(text), list)
