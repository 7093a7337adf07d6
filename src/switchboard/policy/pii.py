"""Detectors of personal data and secrets in text: pure functions over one string, shared by the PII
guardrail and by the redaction of stored records.

The kinds are those of :data:`~switchboard.config.governance.PII_KINDS`:

- ``email``;
- ``phone``: international (``+44 20 7946 0958``, ``0044 …``) and the common national formats (a trunk
  ``0``, ``(555) 123-4567``, ``555-123-4567``); digit runs that belong to card numbers, IBANs, dates or
  version numbers are left alone;
- ``card``: 13–19 digits, spaces or dashes allowed, Luhn-checked, with a card network's first digit;
- ``iban``: with or without spaces, the country's length and the mod-97 check;
- ``ip``: IPv4 and IPv6 (validated with :mod:`ipaddress`); loopback, unspecified and reserved addresses
  are not personal and are left alone;
- ``national_id``: US SSN, UK National Insurance number, Spanish DNI/NIE (letter check), Dutch BSN
  (11-test, only next to its name);
- ``secret``: ``sk-…`` keys (OpenAI, Anthropic, Switchboard), Stripe, Google ``AIza…``, AWS access key
  ids, GitHub and Slack tokens, JWTs, bearer and basic credentials, private key blocks, credentials in
  URLs and ``password=…`` / ``"api_key": "…"`` pairs (only the value is the finding).

A :class:`Finding`'s ``label`` names the finer kind (``api_key``, ``jwt``, ``credential``, ``us_ssn`` …).

Every pattern runs in linear time: no unbounded repetition nests another, and each pattern's lookbehind
lets a match start only at the beginning of a run, so a long run of look-alike characters is read once.
A text without digits, ``@``, ``:`` or a secret's hint word (``key``, ``token``, ``sk-`` …) skips the
patterns that need them.

Usage::

    find_pii("mail bob@example.com")   # [Finding(kind='email', start=5, end=20, value='bob@example.com', ...)]
    redact_text("call +44 20 7946 0958")[0]   # 'call [REDACTED:phone]'
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Collection, Iterable, Iterator
from dataclasses import dataclass

from switchboard.config.governance import PII_KINDS

__all__ = ["Finding", "find_pii", "redact_text", "replace_findings", "resolve_overlaps"]


@dataclass(frozen=True, slots=True)
class Finding:
    """Something found in a text: ``text[start:end] == value``. ``kind`` is one of the PII kinds, or
    ``injection`` (whose finding spans the whole text and carries no value); ``label`` the finer kind
    (``api_key``, ``jwt``, ``us_ssn`` …, or the injection rules that fired, comma-separated); ``score`` how
    sure the detector is, from 0 to 1."""

    kind: str
    start: int
    end: int
    value: str
    label: str = ""
    score: float = 1.0


# When findings overlap, the more specific kind wins: a secret over everything, a checksummed number
# over a phone number that merely has the right shape.
_PRIORITY = {"secret": 0, "iban": 1, "card": 2, "national_id": 3, "email": 4, "ip": 5, "phone": 6}

_Span = tuple[int, int]
_Check = Callable[[re.Match[str]], _Span | None]


@dataclass(frozen=True, slots=True)
class _Detector:
    kind: str
    label: str
    pattern: re.Pattern[str]
    check: _Check | None = None
    needs: str = "digit"  # the cheap hint (see _HINTS) a text must show for this pattern to run

    def find(self, text: str) -> Iterator[Finding]:
        for m in self.pattern.finditer(text):
            span = m.span() if self.check is None else self.check(m)
            if span is not None and span[1] > span[0]:
                yield Finding(self.kind, span[0], span[1], text[span[0]:span[1]], self.label)


# ---------------------------------------------------------------------------------------------- checksums


def _luhn(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def _mod97(compact: str) -> bool:
    moved = compact[4:] + compact[:4]
    return int("".join(str(int(ch, 36)) for ch in moved)) % 97 == 1


# ------------------------------------------------------------------------------------------------- email

_EMAIL = re.compile(
    r"(?<![\w.%+-])[A-Za-z0-9._%+-]{1,64}+@[A-Za-z0-9](?:[A-Za-z0-9-]{0,62}+\.)+[A-Za-z]{2,24}"
    r"(?![\w-]|\.[A-Za-z0-9])")

# ------------------------------------------------------------------------------------------------- phone

# A candidate is any run of digits and separators that is not glued to a word or to other digit groups;
# _phone_span then accepts only the shapes phone numbers have.
_PHONE = re.compile(r"(?<![\w+.@/-])(?:\+|\(\+|(?<![0-9][ .()-])\(?)[0-9][0-9 ().-]{5,22}[0-9]"
                    r"(?![\w@]|[ .()-]{1,2}[0-9])")
_NATIONAL_PHONE = (
    re.compile(r"\(0?[0-9]{2,4}\) ?[0-9]{3,4}[ .-]?[0-9]{3,4}"),  # (020) 7946 0958, (555) 123-4567
    re.compile(r"0[0-9]{1,4}(?:[ .-]?[0-9]{2,8}){1,4}"),  # a trunk 0: 020 7946 0958, 06 12 34 56 78
    re.compile(r"[2-9][0-9]{2}([ .-])[0-9]{3}\1[0-9]{4}"),  # North America: 555-123-4567
    re.compile(r"[6-9][0-9]{2}(?: [0-9]{2}){3}|[6-9][0-9]{2}(?: [0-9]{3}){2}"),  # Spain: 612 34 56 78
)
_DATE_LIKE = re.compile(r"(?<![0-9])(?:[0-3]?[0-9][./-][01]?[0-9][./-](?:19|20)[0-9]{2}"
                        r"|(?:19|20)[0-9]{2}[./-][01]?[0-9][./-][0-3]?[0-9])(?![0-9])")
_DOUBLE_SEPARATOR = re.compile(r"[ .-]{2}")


def _phone_span(m: re.Match[str]) -> _Span | None:
    s = m.group()
    digits = sum(ch.isdigit() for ch in s)
    if s.count("(") != s.count(")") or s.count("(") > 1 or _DOUBLE_SEPARATOR.search(s) or _DATE_LIKE.search(s):
        return None
    if s.startswith(("+", "(+")):
        ok = 8 <= digits <= 15
    elif s.startswith("00"):
        ok = 10 <= digits <= 17 and s[2] != "0"
    else:
        ok = 9 <= digits <= 11 and any(p.fullmatch(s) for p in _NATIONAL_PHONE)
        ok = ok and (digits != 9 or s[0] != "0")  # a trunk 0 comes with at least 10 digits
    return m.span() if ok else None


# -------------------------------------------------------------------------------------------------- card

_CARD = re.compile(r"(?<![\w.,-])(?<![0-9][ -])[0-9](?:[ -]?[0-9]){12,18}(?![0-9]|[ -][0-9]|[.,][0-9])")


def _card_span(m: re.Match[str]) -> _Span | None:
    digits = re.sub(r"[ -]", "", m.group())
    # A network's first digit (Amex/Diners 3, Visa 4, Mastercard 2/5, Discover/UnionPay 6); a run of one
    # digit repeated passes Luhn but is a placeholder, not a card.
    if digits[0] not in "23456" or digits.count(digits[0]) == len(digits) or not _luhn(digits):
        return None
    return m.span()


# -------------------------------------------------------------------------------------------------- iban

_IBAN = re.compile(r"(?<![A-Za-z0-9])[A-Z]{2}[0-9]{2}(?: ?[A-Z0-9]){11,30}+")
_IBAN_LENGTHS = {
    "AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22, "BH": 22, "BR": 29,
    "BY": 28, "CH": 21, "CR": 22, "CY": 28, "CZ": 24, "DE": 22, "DK": 18, "DO": 28, "EE": 20, "EG": 29,
    "ES": 24, "FI": 18, "FO": 18, "FR": 27, "GB": 22, "GE": 22, "GI": 23, "GL": 18, "GR": 27, "GT": 28,
    "HR": 21, "HU": 28, "IE": 22, "IL": 23, "IQ": 23, "IS": 26, "IT": 27, "JO": 30, "KW": 30, "KZ": 20,
    "LB": 28, "LC": 32, "LI": 21, "LT": 20, "LU": 20, "LV": 21, "MC": 27, "MD": 24, "ME": 22, "MK": 19,
    "MR": 27, "MT": 31, "MU": 30, "NL": 18, "NO": 15, "PK": 24, "PL": 28, "PS": 29, "PT": 25, "QA": 29,
    "RO": 24, "RS": 22, "SA": 24, "SC": 31, "SE": 24, "SI": 19, "SK": 24, "SM": 27, "ST": 25, "SV": 28,
    "TL": 23, "TN": 24, "TR": 26, "UA": 29, "VA": 22, "VG": 24, "XK": 20,
}


def _iban_span(m: re.Match[str]) -> _Span | None:
    # The candidate may run on into a following capitalised word; the country's length says where it ends.
    s = m.group()
    length = _IBAN_LENGTHS.get(s[:2])
    if length is None:
        return None
    seen = 0
    for i, ch in enumerate(s):
        if ch != " ":
            seen += 1
            if seen == length:
                end = m.start() + i + 1
                text = m.string
                if end < len(text) and text[end].isalnum():
                    return None
                return (m.start(), end) if _mod97(s[: i + 1].replace(" ", "")) else None
    return None


# ---------------------------------------------------------------------------------------------------- ip

_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])"
_IPV4 = re.compile(rf"(?<![\w.])(?:{_OCTET}\.){{3}}{_OCTET}(?!\w|\.[0-9])")
_IPV6 = re.compile(r"(?<![\w:.])(?=[0-9A-Fa-f]{0,4}:)[0-9A-Fa-f:.]{2,45}+")


def _ip_is_personal(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    return not (ip.is_loopback or ip.is_unspecified or ip.is_multicast or ip.is_reserved or ip.is_link_local)


def _ipv4_span(m: re.Match[str]) -> _Span | None:
    return m.span() if _ip_is_personal(ipaddress.IPv4Address(m.group())) else None


def _ipv6_span(m: re.Match[str]) -> _Span | None:
    s = m.group().rstrip(".")
    end = m.start() + len(s)
    text = m.string
    if s.count(":") < 2 or (end < len(text) and (text[end].isalnum() or text[end] in "_:")):
        return None
    if sum(1 for g in s.split(":") if g) < 3:  # "1::2" is more often a slice than an address
        return None
    try:
        ip = ipaddress.IPv6Address(s)
    except ValueError:
        return None
    return (m.start(), end) if _ip_is_personal(ip) else None


# ------------------------------------------------------------------------------------------- national id

_US_SSN = re.compile(r"(?<![\w-])(?!000|666|9[0-9]{2})[0-9]{3}-(?!00)[0-9]{2}-(?!0000)[0-9]{4}(?!\w|-[0-9])")
_UK_NINO = re.compile(r"(?<![A-Za-z0-9])(?!BG|GB|KN|NK|NT|TN|ZZ)[A-CEGHJ-PR-TW-Z][A-CEGHJ-NPR-TW-Z]"
                      r"( ?)[0-9]{2}\1[0-9]{2}\1[0-9]{2}\1[A-D](?![A-Za-z0-9])")
_ES_DNI = re.compile(r"(?<![A-Za-z0-9-])([XYZ]?)([0-9]{7,8})-?([A-Z])(?![A-Za-z0-9])")
_NL_BSN = re.compile(r"(?i)(?<![a-z])(?:bsn|burgerservicenummer|sofi-?nummer)(?![a-z])[^0-9\n]{0,20}+"
                     r"([0-9]{9}|[0-9]{4}\.[0-9]{2}\.[0-9]{3})(?![0-9])")
_DNI_LETTERS = "TRWAGMYFPDXBNJZSQVHLCKE"


def _es_dni_span(m: re.Match[str]) -> _Span | None:
    prefix, digits, letter = m.groups()
    if len(digits) != (7 if prefix else 8):
        return None
    number = int(str("XYZ".index(prefix)) + digits) if prefix else int(digits)
    return m.span() if _DNI_LETTERS[number % 23] == letter else None


def _nl_bsn_span(m: re.Match[str]) -> _Span | None:
    d = [int(ch) for ch in m.group(1) if ch.isdigit()]
    total = sum(d[i] * (9 - i) for i in range(8)) - d[8]
    return m.span(1) if total % 11 == 0 and any(d) else None


# ------------------------------------------------------------------------------------------------ secret

# Every secret pattern's match contains one of these (lower-cased).
_SECRET_HINTS = ("bearer", "basic", "sk-", "sk_", "rk_", "aiza", "akia", "asia", "abia", "acca", "eyj", "gh", "xox",
                 "key", "secret", "passw", "passphrase", "pwd", "token", "credential", "://")
_CREDENTIAL_NAMES = (r"api[_-]?key|apikey|x-api-key|secret(?:[_-]?key)?|client[_-]?secret|password|passwd"
                     r"|passphrase|pwd|token|access[_-]?token|auth[_-]?token|refresh[_-]?token|access[_-]?key"
                     r"|private[_-]?key|credentials?")
_CREDENTIAL = re.compile(
    rf"(?i)(?<![A-Za-z0-9])(?:[A-Za-z0-9]++[_-]){{0,3}}(?:{_CREDENTIAL_NAMES})(?![A-Za-z0-9])[\"']?"
    r"\s*+(?:[:=]>?|=>)\s*+[\"']?([^\s\"'`,;()\[\]{}<>\\]{6,200}+)(?![(\[])")
_URL_CREDENTIAL = re.compile(r"(?i)(?<![a-z0-9])[a-z][a-z0-9+.-]{1,15}://[^\s:/@]{1,64}:([^\s/@]{3,128})@")
_BASIC = re.compile(r"(?i)(?<![a-z0-9])authorization\s*+[:=]\s*+[\"']?basic\s++([A-Za-z0-9+/]{8,}+=*+)")
_BEARER = re.compile(r"(?i)(?<![A-Za-z0-9_-])bearer\s++([A-Za-z0-9._~+/-]++=*+)")
_NOT_A_VALUE = re.compile(r"(?i)(?:none|null|nil|true|false|undefined|required|optional|string|changeme"
                          r"|(?:your|my|the)[_-].*|x{6,}|\*{6,}|\.{6,}|os\.environ.*|process\.env.*)")
_SYMBOL = re.compile(r"[0-9!#$%&*+./:=?@^_~-]")


def _looks_random(value: str) -> bool:
    """A credential value, not a word: it has a digit or a symbol, or capitals inside it."""
    return bool(_SYMBOL.search(value)) or (any(c.isupper() for c in value[1:]) and any(c.islower() for c in value))


def _credential_span(m: re.Match[str]) -> _Span | None:
    value = m.group(1)
    if value[0] in "$%" or _NOT_A_VALUE.fullmatch(value) or not _looks_random(value):
        return None
    return m.span(1)


def _group_span(m: re.Match[str]) -> _Span | None:
    return m.span(1)


def _bearer_span(m: re.Match[str]) -> _Span | None:
    token = m.group(1).rstrip(".")
    if len(token) < 8 or not _looks_random(token):
        return None
    return m.start(1), m.start(1) + len(token)


def _has_digit_or_capital(m: re.Match[str]) -> _Span | None:
    key = m.group()
    return m.span() if any(c.isdigit() or c.isupper() for c in key) else None


_SECRETS: tuple[tuple[str, re.Pattern[str], _Check | None], ...] = (
    ("private_key", re.compile(r"-----BEGIN (?:[A-Z]+ ){0,3}PRIVATE KEY-----(?:[A-Za-z0-9+/=\s]|\\[nr])*+"
                               r"(?:-----END (?:[A-Z]+ ){0,3}PRIVATE KEY-----)?"), None),
    ("jwt", re.compile(r"(?<![A-Za-z0-9_-])eyJ[A-Za-z0-9_-]{5,}+\.eyJ[A-Za-z0-9_-]{5,}+\.[A-Za-z0-9_-]{5,}+"),
     None),
    ("api_key", re.compile(r"(?<![A-Za-z0-9_-])sk-[A-Za-z0-9_-]{16,}+"), _has_digit_or_capital),
    ("api_key", re.compile(r"(?<![A-Za-z0-9_])[sr]k_(?:live|test)_[A-Za-z0-9]{16,}+"), None),
    ("api_key", re.compile(r"(?<![A-Za-z0-9_-])AIza[0-9A-Za-z_-]{35}(?![0-9A-Za-z_-])"), None),
    ("api_key", re.compile(r"(?<![A-Z0-9])(?:AKIA|ASIA|ABIA|ACCA)[0-9A-Z]{16}(?![0-9A-Z])"), None),
    ("github_token", re.compile(r"(?<![A-Za-z0-9_])(?:gh[pousr]_[A-Za-z0-9]{36,}+|github_pat_[A-Za-z0-9_]{22,}+)"),
     None),
    ("slack_token", re.compile(r"(?<![A-Za-z0-9_-])xox[abposr]-[A-Za-z0-9-]{10,}+"), None),
    ("basic", _BASIC, _group_span),
    ("bearer", _BEARER, _bearer_span),
    ("credential", _URL_CREDENTIAL, _group_span),
    ("credential", _CREDENTIAL, _credential_span),
)

_DETECTORS: tuple[_Detector, ...] = (
    *(_Detector("secret", label, pattern, check, "secret") for label, pattern, check in _SECRETS),
    _Detector("iban", "iban", _IBAN, _iban_span),
    _Detector("card", "card", _CARD, _card_span),
    _Detector("national_id", "us_ssn", _US_SSN),
    _Detector("national_id", "uk_nino", _UK_NINO),
    _Detector("national_id", "es_dni", _ES_DNI, _es_dni_span),
    _Detector("national_id", "nl_bsn", _NL_BSN, _nl_bsn_span),
    _Detector("email", "email", _EMAIL, None, "at"),
    _Detector("ip", "ipv4", _IPV4, _ipv4_span),
    _Detector("ip", "ipv6", _IPV6, _ipv6_span, "colon"),
    _Detector("phone", "phone", _PHONE, _phone_span),
)

_DIGIT = re.compile(r"[0-9]")


def _has_secret_hint(lowered: str) -> bool:
    return any(hint in lowered for hint in _SECRET_HINTS)


_HINTS: dict[str, Callable[[str], bool]] = {
    "digit": lambda text: _DIGIT.search(text) is not None,
    "at": lambda text: "@" in text,
    "colon": lambda text: ":" in text,
    "secret": lambda text: _has_secret_hint(text.lower()),
}


# ------------------------------------------------------------------------------------------------ public


def find_pii(text: str, kinds: Collection[str] = PII_KINDS) -> list[Finding]:
    """The personal data and secrets of the given ``kinds`` in ``text``: non-overlapping, by position."""
    if not text:
        return []
    hints: dict[str, bool] = {}
    found: list[Finding] = []
    for detector in _DETECTORS:
        if detector.kind not in kinds:
            continue
        hint = hints.get(detector.needs)
        if hint is None:
            hint = hints[detector.needs] = _HINTS[detector.needs](text)
        if hint:
            found.extend(detector.find(text))
    return resolve_overlaps(found) if len(found) > 1 else found


def resolve_overlaps(findings: Iterable[Finding]) -> list[Finding]:
    """``findings`` without overlaps, by position: of findings that overlap, the more specific kind wins
    (a secret over everything), then the longer one."""
    ordered = sorted(findings, key=lambda f: (f.start, -f.end))
    out: list[Finding] = []
    cluster: list[Finding] = []
    cluster_end = -1
    for f in ordered:
        if cluster and f.start >= cluster_end:
            out.extend(_pick(cluster))
            cluster = []
        cluster_end = max(cluster_end, f.end) if cluster else f.end
        cluster.append(f)
    out.extend(_pick(cluster))
    return out


def _pick(cluster: list[Finding]) -> list[Finding]:
    if len(cluster) <= 1:
        return cluster
    kept: list[Finding] = []
    for f in sorted(cluster, key=lambda f: (_PRIORITY.get(f.kind, len(_PRIORITY)), f.start - f.end, f.start)):
        if all(f.end <= k.start or f.start >= k.end for k in kept):
            kept.append(f)
    return sorted(kept, key=lambda f: f.start)


def replace_findings(text: str, findings: Iterable[Finding], placeholder: Callable[[Finding], str]) -> str:
    """``text`` with each finding (non-overlapping, by position) replaced by ``placeholder(finding)``."""
    pieces: list[str] = []
    pos = 0
    for f in findings:
        pieces.append(text[pos:f.start])
        pieces.append(placeholder(f))
        pos = f.end
    if not pieces:
        return text
    pieces.append(text[pos:])
    return "".join(pieces)


def _redacted(f: Finding) -> str:
    return f"[REDACTED:{f.kind}]"


def redact_text(text: str, kinds: Collection[str] = PII_KINDS,
                placeholder: Callable[[Finding], str] | None = None) -> tuple[str, list[Finding]]:
    """``text`` with every finding of ``kinds`` replaced (by ``[REDACTED:<kind>]`` unless ``placeholder``
    says otherwise), and the findings."""
    findings = find_pii(text, kinds)
    return replace_findings(text, findings, placeholder or _redacted), findings
