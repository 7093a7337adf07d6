"""Log hygiene: every line the gateway logs passes through redaction first.

Secrets (bearer tokens, ``sk-…`` and ``AIza…`` keys, JWTs, ``key=value`` credentials) and personal data of a
recognisable shape are replaced before a handler writes anything, in the message and in a traceback
alike, whichever library logged it.

Usage::

    logging.basicConfig(level="INFO")
    install_redaction()            # on every handler of the root logger
"""

from __future__ import annotations

import logging

from switchboard.telemetry.redaction import redact

__all__ = ["RedactingFilter", "install_redaction"]


class RedactingFilter(logging.Filter):
    """A handler filter that redacts the formatted message and any exception text of each record."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = redact(message)
        if clean != message:
            record.msg, record.args = clean, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True


def install_redaction(logger: logging.Logger | None = None) -> None:
    """Put a :class:`RedactingFilter` on every handler of ``logger`` (the root logger by default)."""
    target = logger or logging.getLogger()
    for handler in target.handlers:
        if not any(isinstance(f, RedactingFilter) for f in handler.filters):
            handler.addFilter(RedactingFilter())
