"""Simulated LLM providers: real OpenAI, Anthropic and Gemini wire formats on a local socket.

The upstream for the gateway's tests, demo and benchmarks, and the default fleet when no provider key
is configured. Answers are deterministic (the same prompt gets the same reply), timing follows each
model's ``ttft_ms`` and ``tokens_per_second``, and every failure a real provider can produce can be
provoked per request.

Usage::

    async with SimServer(DEFAULT_FLEET) as sim:
        raw = gateway_config_for_fleet(sim.fleet, sim.base_url)

Endpoints (every model answers on every format):

* OpenAI: ``POST /v1/chat/completions``, ``POST /v1/embeddings``, ``GET /v1/models[/{id}]``
* Anthropic: ``POST /v1/messages``, ``POST /v1/messages/count_tokens``, ``GET /v1/models[/{id}]``
  (chosen when the request carries ``anthropic-version``)
* Gemini: ``POST /v1beta/models/{model}:generateContent | :streamGenerateContent[?alt=sse] |
  :countTokens | :embedContent | :batchEmbedContents``, ``GET /v1beta/models[/{id}]`` (also under ``/v1``)
* ``GET /health``
* Control: ``GET /_sim/models/{name}`` returns a model's settings; ``POST /_sim/models/{name}`` with a
  JSON object of :class:`SimModel` fields (``failure_rate``, ``failure_modes``, ``ttft_ms``,
  ``tokens_per_second``, ``output_tokens`` …) changes them while serving and returns the new settings
  (404 for an unknown model, 400 for a bad field or value) — for benchmarks whose phases change
  failure rates (with ``--workers N``, only the worker that answers changes). In Python:
  ``sim.update_model("sim-claude", failure_rate=0.2)``.

Scripting headers (the gateway forwards ``x-sim-*``; an unknown ``x-sim-*`` header is a 400):

``x-sim-reply: TEXT``
    Reply with exactly this text; streamed one word (with its leading whitespace) per chunk. A value
    starting with ``"`` is read as a JSON string literal, for newlines (``"line one\nline two"``).
``x-sim-output-tokens: N``
    Default reply length instead of the model's ``output_tokens`` (still capped by ``max_tokens``).
``x-sim-ttft-ms: MS`` / ``x-sim-tps: N``
    Time to first token, and tokens per second after it (0 = all at once).
``x-sim-status: CODE`` (+ ``x-sim-error-message: TEXT``, ``x-sim-retry-after: SECONDS``)
    Answer with this HTTP error in the format's error shape; ``retry-after`` is sent when given.
``x-sim-timeout: 1``
    Accept the request and never answer, until the client goes away.
``x-sim-reset-after: N``
    Streaming: reset the TCP connection after N content chunks. Not streaming: reset with no response.
``x-sim-malformed: 1``
    HTTP 200 with a body that is not valid JSON (streaming: a garbage SSE frame).
``x-sim-stream-error-after: N``
    Streaming: HTTP 200, N content chunks, then an in-band error (OpenAI ``event: error`` + an
    ``{"error": ...}`` payload, Anthropic ``event: error`` ``overloaded_error``, Gemini an ``{"error": ...}``
    frame). Not streaming: the equivalent status error (500 / 529 / 503).
``x-sim-cached-tokens: N`` / ``x-sim-cache-write-tokens: N`` / ``x-sim-reasoning-tokens: N``
    Report prompt-cache reads / writes and reasoning tokens in each format's usage fields.
``x-sim-tool-call: never|always|auto``
    Never call a tool, or call one even after a tool result.
``x-sim-refusal: TEXT``
    The model declines, explaining with TEXT (read like ``x-sim-reply``). OpenAI: ``content`` null,
    ``refusal: TEXT``, ``finish_reason: "stop"`` (streamed as ``delta.refusal`` pieces); Anthropic: TEXT as
    the text content with ``stop_reason: "refusal"``; Gemini: no content, ``finishReason: "SAFETY"``
    (streamed as one final frame). Counts as scripted for ``x-sim-target`` and ``x-sim-times``.
``x-sim-target: MODEL[,MODEL...]``
    Apply the scripting headers only to requests for these models (names or aliases); others are
    served normally — so a fallback from a failing model to a healthy one can be tested.
``x-sim-times: N``
    Apply the scripted failure (or refusal) only to the first N requests carrying the same ``x-sim-*`` headers
    (add a distinct ``x-sim-id: ANYTHING`` to keep tests apart) — e.g. fail once, then succeed.

Models' ``failure_rate`` / ``failure_modes`` inject failures at random (the server's RNG is seeded with
``SimServer(seed=...)``) into requests that script none. Token counting is an estimate described in
:mod:`switchboard.sim.words`.
"""

from switchboard.sim.fleet import (
    DEFAULT_FLEET,
    Fleet,
    FleetError,
    SimModel,
    gateway_config_for_fleet,
    load_fleet,
)
from switchboard.sim.http import SimRequest, SimStats
from switchboard.sim.scenario import SCRIPT_HEADERS
from switchboard.sim.server import SimServer, main

__all__ = [
    "DEFAULT_FLEET",
    "SCRIPT_HEADERS",
    "Fleet",
    "FleetError",
    "SimModel",
    "SimRequest",
    "SimServer",
    "SimStats",
    "gateway_config_for_fleet",
    "load_fleet",
    "main",
]
