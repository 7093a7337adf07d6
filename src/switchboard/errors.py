"""The one error tree of Switchboard.

Every failure that can reach a client is one of these. Each class knows its HTTP status, its
OpenAI error ``type``, its Anthropic error ``type`` and whether trying again (elsewhere) may help.
Providers translate vendor errors into this tree at their edge; ingress renders it in the client's
dialect. Nothing else builds error JSON.

::

    SwitchboardError                    500 api_error               (base; never raised bare)
     ├── InvalidRequest                 400 invalid_request_error
     │    ├── UnsupportedParameter      400 invalid_request_error   code=unsupported_parameter
     │    ├── ContextLengthExceeded     400 invalid_request_error   code=context_length_exceeded
     │    ├── ContentPolicyViolation    400 invalid_request_error   code=content_policy_violation
     │    └── MethodNotAllowed          405 invalid_request_error   code=method_not_allowed, carries allow
     ├── AuthenticationFailed           401 authentication_error
     ├── PermissionDenied               403 permission_error
     ├── NotFound                       404 not_found_error
     │    └── ModelNotFound             404 not_found_error         code=model_not_found
     ├── PayloadTooLarge                413 request_too_large
     ├── RateLimited                    429 rate_limit_error        retryable, carries retry_after
     ├── UpstreamError                  502 api_error               retryable (base of provider failures)
     │    ├── UpstreamStatusError       502 api_error               carries the upstream status
     │    ├── UpstreamOverloaded        503 overloaded_error        retryable (Anthropic 529)
     │    ├── UpstreamTimeout           504 timeout_error           retryable
     │    ├── UpstreamConnectionError   502 api_error               retryable (refused, reset)
     │    └── UpstreamProtocolError     502 api_error               retryable (malformed body)
     ├── NoHealthyDeployment           503 overloaded_error        retryable
     └── InternalError                  500 api_error

Usage::

    raise ModelNotFound("The model 'gpt-9' does not exist.", param="model")
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = [
    "AuthenticationFailed",
    "ContentPolicyViolation",
    "ContextLengthExceeded",
    "InternalError",
    "InvalidRequest",
    "MethodNotAllowed",
    "ModelNotFound",
    "NoHealthyDeployment",
    "NotFound",
    "PayloadTooLarge",
    "PermissionDenied",
    "RateLimited",
    "SwitchboardError",
    "UnsupportedParameter",
    "UpstreamConnectionError",
    "UpstreamError",
    "UpstreamOverloaded",
    "UpstreamProtocolError",
    "UpstreamStatusError",
    "UpstreamTimeout",
]


def _redacted(message: str) -> str:
    """A secret or personal datum an upstream echoed, or a client sent, never reaches an error body, a log
    line or a record through an error message."""
    from switchboard.telemetry.redaction import ERROR_KINDS, redact

    return redact(message, ERROR_KINDS)


class SwitchboardError(Exception):
    """Base of every error a client can see. Its message is redacted of secrets and personal data."""

    status: int = 500
    openai_type: str = "api_error"
    anthropic_type: str = "api_error"
    default_code: str | None = None
    retryable: bool = False

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        message = _redacted(message)
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code if code is not None else self.default_code
        self.retry_after = retry_after

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r})"


class InvalidRequest(SwitchboardError):
    """The request is malformed or asks for something the chosen model cannot do."""

    status = 400
    openai_type = "invalid_request_error"
    anthropic_type = "invalid_request_error"


class UnsupportedParameter(InvalidRequest):
    """A parameter is not supported by the dialect or by the chosen upstream."""

    default_code = "unsupported_parameter"


class ContextLengthExceeded(InvalidRequest):
    """The prompt does not fit the model's context window."""

    default_code = "context_length_exceeded"


class ContentPolicyViolation(InvalidRequest):
    """The upstream refused the request under its content policy."""

    default_code = "content_policy_violation"


class MethodNotAllowed(InvalidRequest):
    """The endpoint exists but not for this HTTP method; ``allow`` names the methods it takes (the
    response's ``Allow`` header), in order, with HEAD wherever GET is (a HEAD is answered as a GET)."""

    status = 405
    default_code = "method_not_allowed"

    def __init__(self, message: str, *, allow: Iterable[str]) -> None:
        super().__init__(message)
        methods = set(allow)
        if "GET" in methods:
            methods.add("HEAD")
        self.allow = tuple(sorted(methods))


class AuthenticationFailed(SwitchboardError):
    """The caller's credential is missing or wrong."""

    status = 401
    openai_type = "authentication_error"
    anthropic_type = "authentication_error"
    default_code = "invalid_api_key"


class PermissionDenied(SwitchboardError):
    """The caller may not do this."""

    status = 403
    openai_type = "permission_error"
    anthropic_type = "permission_error"


class NotFound(SwitchboardError):
    """No such route or resource."""

    status = 404
    openai_type = "not_found_error"
    anthropic_type = "not_found_error"


class ModelNotFound(NotFound):
    """The requested public model name or alias is not configured."""

    default_code = "model_not_found"


class PayloadTooLarge(SwitchboardError):
    """The request body is larger than the configured limit."""

    status = 413
    openai_type = "invalid_request_error"
    anthropic_type = "request_too_large"
    default_code = "request_too_large"


class RateLimited(SwitchboardError):
    """Too many requests; ``retry_after`` says when to come back."""

    status = 429
    openai_type = "rate_limit_error"
    anthropic_type = "rate_limit_error"
    default_code = "rate_limit_exceeded"
    retryable = True


class UpstreamError(SwitchboardError):
    """An upstream provider failed. Trying again, or another deployment, may help."""

    status = 502
    openai_type = "api_error"
    anthropic_type = "api_error"
    default_code = "upstream_error"
    retryable = True


class UpstreamStatusError(UpstreamError):
    """The upstream answered with an error status that is not the caller's fault."""

    def __init__(
        self,
        message: str,
        *,
        upstream_status: int,
        retryable: bool = True,
        param: str | None = None,
        code: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message, param=param, code=code, retry_after=retry_after)
        self.upstream_status = upstream_status
        self.retryable = retryable


class UpstreamOverloaded(UpstreamError):
    """The upstream said it is overloaded (Anthropic 529, or 503)."""

    status = 503
    openai_type = "api_error"
    anthropic_type = "overloaded_error"
    default_code = "overloaded"


class UpstreamTimeout(UpstreamError):
    """The upstream did not answer in time."""

    status = 504
    openai_type = "timeout_error"
    anthropic_type = "timeout_error"
    default_code = "upstream_timeout"


class UpstreamConnectionError(UpstreamError):
    """The connection to the upstream failed or was reset."""

    default_code = "upstream_connection_error"


class UpstreamProtocolError(UpstreamError):
    """The upstream's answer could not be understood (malformed body or stream)."""

    default_code = "upstream_protocol_error"


class NoHealthyDeployment(SwitchboardError):
    """Every deployment that could serve the request is unavailable."""

    status = 503
    openai_type = "api_error"
    anthropic_type = "overloaded_error"
    default_code = "no_healthy_deployment"
    retryable = True


class InternalError(SwitchboardError):
    """A bug in Switchboard. Logged with the request id; the client sees no internals."""

    status = 500
