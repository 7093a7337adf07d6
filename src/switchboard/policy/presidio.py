"""The ``presidio`` guardrail: Microsoft Presidio's pattern recognisers behind the :class:`Guardrail` protocol.

Presidio's analyzer normally loads (and downloads) a large spaCy model for named-entity recognition. Here
it gets a blank English pipeline instead (``spacy.blank("en")``: a tokenizer, no model), so it works
offline and only the pattern recognisers (with their checksums and context words) run. Their entities
map onto our kinds; secrets, which Presidio has no recogniser for, are found by
:func:`switchboard.policy.pii.find_pii`. Presidio is imported only here, when the guardrail is built;
building the analyzer takes a second or two, so build the guardrail once at start-up.

Install with ``pip install 'switchboard[presidio]'``.

Usage::

    guard = PresidioGuardrail("presidio", GuardrailConfig(type="presidio", action="redact"))
    guard.scan("call 212-555-0199")   # [Finding(kind='phone', ...)]
"""

from __future__ import annotations

import importlib
from typing import Any

from switchboard.config.governance import PII_KINDS, GuardrailConfig
from switchboard.policy.pii import Finding, find_pii, resolve_overlaps

__all__ = ["ENTITY_KINDS", "PresidioGuardrail"]

#: Presidio entity → our PII kind.
ENTITY_KINDS: dict[str, str] = {
    "EMAIL_ADDRESS": "email",
    "PHONE_NUMBER": "phone",
    "CREDIT_CARD": "card",
    "IBAN_CODE": "iban",
    "IP_ADDRESS": "ip",
    "US_SSN": "national_id",
    "US_ITIN": "national_id",
    "US_PASSPORT": "national_id",
    "US_DRIVER_LICENSE": "national_id",
    "UK_NHS": "national_id",
    "UK_NINO": "national_id",
    "ES_NIF": "national_id",
    "ES_NIE": "national_id",
    "IT_FISCAL_CODE": "national_id",
    "IT_PASSPORT": "national_id",
    "IT_IDENTITY_CARD": "national_id",
    "PL_PESEL": "national_id",
    "SG_NRIC_FIN": "national_id",
    "AU_TFN": "national_id",
    "AU_MEDICARE": "national_id",
    "IN_AADHAAR": "national_id",
    "IN_PAN": "national_id",
    "FI_PERSONAL_IDENTITY_CODE": "national_id",
}

# Presidio scores a bare pattern match low and raises it when a checksum or a context word confirms it;
# below this a match is too weak to act on.
_MIN_SCORE = 0.4
_INSTALL_HINT = "the presidio guardrail needs Microsoft Presidio: pip install 'switchboard[presidio]'"


def _analyzer() -> Any:
    """A Presidio ``AnalyzerEngine`` over a blank spaCy pipeline (Presidio is untyped: ``Any``)."""
    try:
        presidio = importlib.import_module("presidio_analyzer")
        nlp_engine = importlib.import_module("presidio_analyzer.nlp_engine")
        spacy = importlib.import_module("spacy")
    except ImportError as exc:
        raise ImportError(_INSTALL_HINT) from exc
    engine = nlp_engine.SpacyNlpEngine(models=[{"lang_code": "en", "model_name": "blank:en"}])
    engine.nlp = {"en": spacy.blank("en")}  # set before the analyzer would load (and download) a model
    analyzer = presidio.AnalyzerEngine(nlp_engine=engine, supported_languages=["en"])
    # Presidio validates e-mail domains with tldextract, which fetches the public suffix list on first use;
    # this recogniser reads the list bundled with tldextract instead.
    tldextract = importlib.import_module("tldextract")
    suffixes = tldextract.TLDExtract(suffix_list_urls=(), cache_dir=None)
    base = presidio.predefined_recognizers.EmailRecognizer
    offline = type("OfflineEmailRecognizer", (base,), {"validate_result": lambda _, text: suffixes(text).fqdn != ""})
    analyzer.registry.remove_recognizer("EmailRecognizer")
    analyzer.registry.add_recognizer(offline())
    return analyzer


class PresidioGuardrail:
    """Finds ``config.entities`` (all kinds when empty) with Presidio's recognisers."""

    __slots__ = ("_analyzer", "_entities", "_kinds", "config", "name")

    def __init__(self, name: str, config: GuardrailConfig) -> None:
        self.name = name
        self.config = config
        self._kinds = frozenset(config.entities or PII_KINDS)
        self._analyzer = _analyzer()
        supported = set(self._analyzer.get_supported_entities(language="en"))
        self._entities = sorted(e for e, kind in ENTITY_KINDS.items() if kind in self._kinds and e in supported)

    def scan(self, text: str) -> list[Finding]:
        found = find_pii(text, ("secret",)) if "secret" in self._kinds else []
        if self._entities and text.strip():
            for r in self._analyzer.analyze(text=text, language="en", entities=self._entities):
                score = float(r.score)
                if score >= _MIN_SCORE:
                    start, end = int(r.start), int(r.end)
                    found.append(Finding(ENTITY_KINDS[r.entity_type], start, end, text[start:end],
                                         r.entity_type.lower(), score))
        return resolve_overlaps(found) if len(found) > 1 else found
