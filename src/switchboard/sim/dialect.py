"""What the three wire formats share: the request context, the error type and the chat flow.

A :class:`Dialect` knows how one API family spells prompts, answers, streams and errors;
:func:`serve_chat` is the one flow every chat endpoint runs (resolve the model, script the request,
fail on cue, check the context window, compose, render whole or streamed).

Usage::

    def messages(ctx: SimContext, req: SimRequest) -> Reply:
        body = ANTHROPIC.json_body(req)
        return serve_chat(ANTHROPIC, ctx, req, body.get("model"), body, bool(body.get("stream")))
"""

from __future__ import annotations

import itertools
import random
import secrets
import time
from abc import ABC, abstractmethod
from collections import deque
from dataclasses import dataclass
from typing import Any

import orjson

from switchboard.sim.answer import Answer, Prompt, compose
from switchboard.sim.fleet import Fleet, SimModel
from switchboard.sim.http import JSON, SSE, Abort, Hang, Reply, Respond, SimRequest, SimStats, StreamReply
from switchboard.sim.scenario import Scenario, ScriptError, Scripts

__all__ = ["Dialect", "SimContext", "SimError", "StreamParts", "Turn", "serve_chat"]


class SimError(Exception):
    """An error answer, rendered by the request's dialect. ``code``/``kind`` override the defaults."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        code: str | None = None,
        kind: str | None = None,
        param: str | None = None,
        retry_after: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.kind = kind
        self.param = param
        self.retry_after = retry_after


class SimContext:
    """Per-server state the handlers share: the fleet, scripting, counters and id generation."""

    def __init__(
        self, fleet: Fleet, *, seed: int | None = None, api_key: str | None = None, record: int = 1000
    ) -> None:
        self.fleet = fleet
        self.scripts = Scripts(random.Random(seed))
        self.stats = SimStats()
        self.api_key = api_key
        self.recent: deque[SimRequest] = deque(maxlen=record)
        self._prefix = secrets.token_hex(4)
        self._ids = itertools.count(1)

    def new_id(self) -> str:
        """A unique id for a response (formats add their prefix: ``chatcmpl-``, ``msg_`` …)."""
        return f"sim{self._prefix}{next(self._ids):012x}"

    def model(self, name: Any) -> SimModel | None:
        if not isinstance(name, str):
            return None
        model = self.fleet.get(name)
        if model is not None:
            by_model = self.stats.by_model
            by_model[model.name] = by_model.get(model.name, 0) + 1
        return model

    def scenario(self, req: SimRequest, model: SimModel) -> Scenario:
        sc = self.scripts.for_request(req.sim, model, self.fleet.get)
        if sc.injected is not None:
            self.stats.failures_injected += 1
        return sc


@dataclass(slots=True)
class Turn:
    """Everything a dialect needs to render one answer."""

    id: str
    created: int
    model: SimModel
    body: dict[str, Any]
    prompt: Prompt
    answer: Answer
    scenario: Scenario


@dataclass(slots=True)
class StreamParts:
    """A rendered stream: frames before the content, one frame per content chunk, frames after."""

    preamble: list[bytes]
    chunks: list[bytes]
    epilogue: list[bytes]


class Dialect(ABC):
    """One API family's wire format."""

    name: str
    tool_id_prefix: str = "call_"
    eager_preamble: bool = False
    stream_content_type: bytes = SSE
    #: status and message of the in-band error ``x-sim-stream-error-after`` sends (and its non-streamed twin)
    stream_error_status: int = 500
    stream_error_message: str = "internal error"

    # -- errors ------------------------------------------------------------------------------------------

    @abstractmethod
    def error(self, err: SimError, rid: str) -> Respond:
        """``err`` as this format's error response."""

    @abstractmethod
    def stream_error_frame(self, message: str, rid: str) -> bytes:
        """The in-band error frame that ends a stream after HTTP 200."""

    @abstractmethod
    def overflow(self, tokens: int, limit: int) -> SimError:
        """The provider's own context-window error."""

    @abstractmethod
    def unknown_model(self, name: str) -> SimError: ...

    def wrong_kind(self, model: SimModel, wanted: str) -> SimError:
        return SimError(
            400, f"model {model.name!r} is an {model.kind} model and does not support {wanted}", param="model"
        )

    @abstractmethod
    def check_auth(self, req: SimRequest, api_key: str | None) -> SimError | None:
        """An authentication error, or ``None`` when the request carries an acceptable key."""

    def json_body(self, req: SimRequest) -> dict[str, Any]:
        try:
            body = orjson.loads(req.body)
        except orjson.JSONDecodeError as exc:
            raise SimError(400, f"could not parse the JSON body of your request: {exc}") from None
        if not isinstance(body, dict):
            raise SimError(400, "the request body must be a JSON object")
        return body

    # -- answers -----------------------------------------------------------------------------------------

    def headers(self, rid: str) -> bytes:
        """Extra response headers (request ids)."""
        return b""

    @abstractmethod
    def parse_prompt(self, body: dict[str, Any]) -> Prompt:
        """The request body as a :class:`Prompt`; raises :class:`SimError` (400) when invalid."""

    @abstractmethod
    def render(self, turn: Turn) -> bytes:
        """The whole (non-streamed) answer body."""

    @abstractmethod
    def stream(self, turn: Turn) -> StreamParts:
        """The streamed answer, frame by frame."""

    def malformed_body(self) -> bytes:
        return b'{"id": "sim-malformed", "choices": [{"index": 0, "message": {"content": "unterminated'

    def malformed_frame(self) -> bytes:
        return b'data: {"id": "sim-malformed", "choices": [{"delta": {"content": "unterminated\n\n'


def failure_reply(d: Dialect, sc: Scenario, stream: bool, rid: str) -> Reply | None:
    """What a scripted or injected failure answers before any generation, else ``None``."""
    if sc.status is not None:
        retry = sc.retry_after
        message = sc.error_message or _DEFAULT_MESSAGES.get(sc.status, f"simulated error {sc.status}")
        return d.error(SimError(sc.status, message, retry_after=retry), rid)
    if sc.timeout:
        return Hang()
    if not stream:
        if sc.reset_after is not None:
            return Abort(sc.ttft)
        if sc.stream_error_after is not None:
            message = sc.error_message or d.stream_error_message
            reply = d.error(SimError(d.stream_error_status, message), rid)
            reply.delay = sc.ttft
            return reply
        if sc.malformed:
            return Respond(200, d.malformed_body(), JSON, d.headers(rid), sc.ttft)
    return None


_DEFAULT_MESSAGES = {
    400: "simulated bad request",
    401: "simulated authentication failure",
    403: "simulated permission failure",
    404: "simulated not found",
    408: "simulated request timeout",
    429: "simulated rate limit: too many requests",
    500: "simulated internal server error",
    502: "simulated bad gateway",
    503: "simulated service unavailable",
    504: "simulated gateway timeout",
    529: "Overloaded",
}


def serve_chat(
    d: Dialect, ctx: SimContext, req: SimRequest, model_name: Any, body: dict[str, Any], stream: bool
) -> Reply:
    """The chat flow shared by every format; :class:`SimError` becomes the format's error response."""
    rid = ctx.new_id()
    try:
        model = ctx.model(model_name)
        if model is None:
            raise d.unknown_model(str(model_name))
        if model.kind != "chat":
            raise d.wrong_kind(model, "chat")
        try:
            sc = ctx.scenario(req, model)
        except ScriptError as exc:
            raise SimError(400, str(exc)) from None
        early = failure_reply(d, sc, stream, rid)
        if early is not None:
            return early
        prompt = d.parse_prompt(body)
        tokens = prompt.token_count()
        if tokens > model.context_window:
            raise d.overflow(tokens, model.context_window)
        answer = compose(prompt, model, sc, prompt_tokens=tokens, tool_id_prefix=d.tool_id_prefix)
    except SimError as err:
        return d.error(err, rid)
    turn = Turn(rid, int(time.time()), model, body, prompt, answer, sc)
    if not stream:
        longest = max((c.token_count for c in answer.choices), default=0)
        return Respond(200, d.render(turn), JSON, d.headers(rid), sc.generation_time(longest))
    parts = d.stream(turn)
    chunks, epilogue = parts.chunks, parts.epilogue
    if sc.malformed:
        chunks, epilogue = [d.malformed_frame()], []
    error_after = sc.stream_error_after
    return StreamReply(
        preamble=parts.preamble,
        chunks=chunks,
        epilogue=epilogue,
        content_type=d.stream_content_type,
        headers=d.headers(rid),
        ttft=sc.ttft,
        interval=sc.interval(),
        eager_preamble=d.eager_preamble,
        reset_after=sc.reset_after,
        error_after=error_after,
        error_frame=d.stream_error_frame(sc.error_message or d.stream_error_message, rid)
        if error_after is not None
        else b"",
    )
