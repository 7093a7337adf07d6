"""Routers through the real gateway: the official SDKs ask a router, the router picks the model (rules,
semantic routes on the local MiniLM, configured quality against price, the feedback bandit), the answer
says which, the record keeps the explanation, a dry run explains without calling upstream, feedback
moves traffic and survives a restart."""

from __future__ import annotations

import asyncio
import json
import random
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import openai
import pytest

from switchboard import ChatRequest, Gateway, Message, RequestContext, TextPart
from switchboard.app import create_app
from switchboard.config.load import parse_config
from switchboard.config.model import Config
from switchboard.routing.bandit import Feedback
from switchboard.sim.fleet import DEFAULT_FLEET, demo_router, gateway_config_for_fleet
from switchboard.storage.records import RecordQuery
from switchboard.storage.sqlite import SQLiteRecordWriter
from tests.e2e.servers import GatewayThread, SimThread
from tests.e2e.test_records import record_of

USER = [{"role": "user", "content": "hello"}]

SEMANTIC = {
    "models": ["sim-gpt-small", "sim-gpt-large", "sim-gemini"],
    "semantic": {
        "routes": [
            {"name": "coding", "model": "sim-gpt-large", "examples": [
                "How do I write a for loop in Python?", "Fix this JavaScript function that throws an error",
                "Write a SQL query that joins two tables", "Why does my Rust code not compile?",
                "Implement binary search in Java", "Refactor this class to use dependency injection"]},
            {"name": "smalltalk", "model": "sim-gpt-small", "examples": [
                "Hi there, how are you?", "Good morning!", "Thanks a lot, have a nice day",
                "What's up?", "Hello, nice to meet you", "See you later, bye"]},
        ],
        "default": "sim-gemini",
    },
}


# The same routes on the fast static encoder, close calls confirmed by MiniLM.
STATIC = {**SEMANTIC, "semantic": {**SEMANTIC["semantic"], "encoder": "minilm-static", "confirm_margin": 0.05}}
STATIC_QUERIES = ("How can I write a while loop in Python?", "Hello! How are you doing today?",
                  "What is the boiling point of water on Mount Everest?")


LEARNED = {
    "models": ["sim-gpt-small", "sim-gemini", "sim-gpt-large"],
    "learned": {"quality_target": 0.75, "names": {"sim-gpt-small": "mistralai/mistral-7b-chat",
                                                  "sim-gemini": "mistralai/mixtral-8x7b-chat",
                                                  "sim-gpt-large": "gpt-4-1106-preview"}},
}


def learner(state: Path) -> dict[str, Any]:
    return {
        "models": ["sim-gpt-small", "sim-claude"],
        # The configured prior favours the small model; feedback will say otherwise.
        "quality": {"sim-gpt-small": 0.8, "sim-claude": 0.6},
        "bandit": {"exploration": 0.2, "cluster_bits": 0, "prior_strength": 10},
    }


def routing_config(sim: SimThread, tmp: Path) -> Config:
    raw = gateway_config_for_fleet(DEFAULT_FLEET, sim.base_url)
    raw["records"] = {"path": str(tmp / "records.db"), "flush_interval": 0.05}
    raw["state"] = {"path": str(tmp / "state.db"), "save_interval": 3600}
    raw["resilience"] = {"retries": {"attempts": 1}, "breaker": {"enabled": False}}
    raw["models"]["rr"] = {"balance": "round_robin", "deployments": [
        {"provider": "sim-openai", "model": "sim-gpt-small", "name": "rr-1"},
        {"provider": "sim-openai", "model": "sim-gpt-small", "name": "rr-2"},
        {"provider": "sim-openai", "model": "sim-gpt-small", "name": "rr-3"}]}
    remote = {**SEMANTIC, "semantic": {**SEMANTIC["semantic"], "encoder": "sim-embed"}}
    raw["routers"] = {**demo_router(DEFAULT_FLEET), "semantic": SEMANTIC, "learner": learner(tmp), "learned": LEARNED,
                      "semantic-remote": remote, "semantic-static": STATIC}
    return parse_config(raw, env={})


@pytest.fixture(scope="module")
def sim() -> Iterator[SimThread]:
    s = SimThread(DEFAULT_FLEET)
    yield s
    s.close()


@pytest.fixture(scope="module")
def config(sim: SimThread, tmp_path_factory: pytest.TempPathFactory) -> Config:
    return routing_config(sim, tmp_path_factory.mktemp("routing"))


def seed_static_table(cache_dir: Path, texts: list[str]) -> None:
    """The minilm-static table with the rows of the tokens of ``texts`` (the others zero), computed as the
    whole table would be: building all of it takes half a minute."""
    import numpy as np
    from tokenizers import Tokenizer

    from switchboard.routing.embeddings import MiniLMEncoder, default_model_dir
    from switchboard.routing.embeddings.static import table_path

    tok = Tokenizer.from_file(str(default_model_dir() / "tokenizer.json"))
    tok.no_truncation()
    ids = sorted({i for e in tok.encode_batch([t.lower() for t in texts], add_special_tokens=False) for i in e.ids})
    encoder = MiniLMEncoder()
    table = np.zeros((encoder.vocab_size, 384), dtype=np.float16)
    table[ids] = encoder.token_vectors(ids)
    cache_dir.mkdir(parents=True, exist_ok=True)
    np.save(table_path(cache_dir), table)


@pytest.fixture(scope="module")
def gateway(config: Config, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayThread]:
    # the conftest's oai/ant clients talk to this one
    cache = tmp_path_factory.mktemp("cache")
    seed_static_table(cache, [*SEMANTIC["semantic"]["routes"][0]["examples"],  # type: ignore[index]
                              *SEMANTIC["semantic"]["routes"][1]["examples"], *STATIC_QUERIES])  # type: ignore[index]
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SWITCHBOARD_CACHE_DIR", str(cache))
        g = GatewayThread(create_app(config))
        yield g
        g.close()


def post(gateway: GatewayThread, path: str, body: Any, headers: dict[str, str] | None = None) -> tuple[int, Any, Any]:
    req = urllib.request.Request(f"{gateway.url}{path}", data=json.dumps(body).encode(), method="POST",
                                 headers={"content-type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, json.loads(resp.read()), resp.headers
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read()), err.headers


def test_a_rule_routes_code_to_the_strongest_model(oai: openai.OpenAI, gateway: GatewayThread) -> None:
    raw = oai.chat.completions.with_raw_response.create(
        model="auto", messages=[{"role": "user", "content": "Write a python function that reverses a list"}])
    assert raw.headers["x-switchboard-router"] == "auto"
    assert raw.headers["x-switchboard-model"] == "sim-claude"
    assert raw.parse().choices[0].message.content
    rec = record_of(gateway, raw.headers["x-request-id"])
    assert rec.router == "auto" and rec.public_model == "sim-claude" and rec.route is not None
    assert rec.route["model"] == "sim-claude" and rec.route["ranking"][0] == "sim-claude"
    assert rec.route["steps"][0]["outcome"].startswith("rule 2 (code and maths) matched")


def test_price_and_quality_decide_the_rest_for_both_dialects(oai: openai.OpenAI, ant: anthropic.Anthropic) -> None:
    raw = oai.chat.completions.with_raw_response.create(model="auto", messages=USER)  # type: ignore[arg-type]
    assert raw.headers["x-switchboard-model"] == "sim-gpt-small"
    msg = ant.messages.with_raw_response.create(model="auto", max_tokens=20, messages=USER)  # type: ignore[arg-type]
    assert (msg.headers["x-switchboard-router"], msg.headers["x-switchboard-model"]) == ("auto", "sim-gpt-small")
    with oai.chat.completions.with_streaming_response.create(model="auto", messages=USER, stream=True) as s:
        assert s.headers["x-switchboard-model"] == "sim-gpt-small"
        assert "".join(c.choices[0].delta.content or "" for c in s.parse() if c.choices)


def test_semantic_routes_on_the_local_encoder(oai: openai.OpenAI) -> None:
    def served(text: str) -> str:
        raw = oai.chat.completions.with_raw_response.create(model="semantic",
                                                            messages=[{"role": "user", "content": text}])
        return raw.headers["x-switchboard-model"]

    assert served("How can I write a while loop in Python?") == "sim-gpt-large"
    assert served("Hello! How are you doing today?") == "sim-gpt-small"
    assert served("What is the boiling point of water on Mount Everest?") == "sim-gemini"


def test_semantic_routes_on_the_static_encoder_with_close_calls_confirmed(oai: openai.OpenAI,
                                                                         gateway: GatewayThread) -> None:
    served = {}
    for text in STATIC_QUERIES:
        raw = oai.chat.completions.with_raw_response.create(model="semantic-static",
                                                            messages=[{"role": "user", "content": text}])
        rec = record_of(gateway, raw.headers["x-request-id"])
        assert rec.route is not None and rec.route["steps"][0]["stage"] == "semantic"
        served[text] = (raw.headers["x-switchboard-model"], rec.route["steps"][0]["outcome"])
    assert [model for model, _ in served.values()] == ["sim-gpt-large", "sim-gpt-small", "sim-gemini"]
    # The first two were clear for the static encoder; the last was a close call, which MiniLM decided.
    assert ["decided by minilm" in outcome for _, outcome in served.values()] == [False, False, True]


def test_the_learned_router_explains_its_prediction(oai: openai.OpenAI, gateway: GatewayThread) -> None:
    prompt = "Write a python function to find the longest common subsequence of two strings."
    raw = oai.chat.completions.with_raw_response.create(model="learned",
                                                        messages=[{"role": "user", "content": prompt}])
    chosen = raw.headers["x-switchboard-model"]
    rec = record_of(gateway, raw.headers["x-request-id"])
    assert rec.route is not None and rec.route["model"] == chosen == rec.public_model
    (step,) = rec.route["steps"]
    assert step["stage"] == "learned" and chosen in step["outcome"]
    quality = {m: v["quality"] for m, v in rec.route["scores"].items()}
    assert set(quality) == {"sim-gpt-small", "sim-gemini", "sim-gpt-large"}
    reached = [m for m in ("sim-gpt-small", "sim-gemini", "sim-gpt-large") if quality[m] >= 0.75]
    assert chosen == (reached[0] if reached else max(quality, key=lambda m: quality[m]))


def test_semantic_routes_on_an_embeddings_model_of_the_gateway(oai: openai.OpenAI, gateway: GatewayThread) -> None:
    # The simulated embeddings carry no meaning, but an example's own text matches it exactly.
    raw = oai.chat.completions.with_raw_response.create(
        model="semantic-remote", messages=[{"role": "user", "content": "Implement binary search in Java"}])
    assert raw.headers["x-switchboard-model"] == "sim-gpt-large"
    rec = record_of(gateway, raw.headers["x-request-id"])
    assert rec.route is not None and rec.route["steps"][0]["detail"]["scores"]["coding"] == pytest.approx(1.0)
    # The embeddings the router asked for are requests of their own, recorded and paid for.
    writer = gateway.app.records
    assert isinstance(writer, SQLiteRecordWriter) and writer.flush(10)
    calls = writer.query(RecordQuery(public_model="sim-embed", caller="switchboard-router", limit=None))
    assert calls and all(c.status == 200 and c.cost_usd > 0 for c in calls)


def test_a_dry_run_explains_without_calling_upstream(gateway: GatewayThread, sim: SimThread) -> None:
    before = sim.stats().requests
    body = {"model": "semantic", "messages": [{"role": "user", "content": "Fix my Python function please"}]}
    status, plan, headers = post(gateway, "/v1/chat/completions", body, {"x-switchboard-dry-run": "true"})
    assert status == 200 and headers["x-request-id"]
    assert plan["object"] == "switchboard.route_plan" and plan["router"] == "semantic"
    assert plan["model"] == plan["decision"]["model"] == "sim-gpt-large"
    step = plan["decision"]["steps"][0]
    assert step["stage"] == "semantic" and step["detail"]["scores"]["coding"] > step["detail"]["thresholds"]["coding"]
    assert plan["deployments"]["candidates"][0]["deployment"] == "sim-openai/sim-gpt-large"
    status, plan, _ = post(gateway, "/v1/messages", {"model": "auto", "max_tokens": 5, "messages": USER},
                           {"x-switchboard-dry-run": "1", "anthropic-version": "2023-06-01"})
    assert status == 200 and plan["model"] == "sim-gpt-small"
    assert sim.stats().requests == before
    status, err, _ = post(gateway, "/v1/chat/completions", body, {"x-switchboard-dry-run": "maybe"})
    assert status == 400 and err["error"]["param"] == "x-switchboard-dry-run"


def test_routers_are_listed_as_models(oai: openai.OpenAI) -> None:
    ids = {m.id for m in oai.models.list()}
    assert {"auto", "semantic", "learner", "learned", "sim-gpt-small"} <= ids
    assert oai.models.retrieve("auto").id == "auto"


def test_a_router_cannot_serve_embeddings(oai: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        oai.embeddings.create(model="auto", input="hello")
    assert caught.value.body["code"] == "model_not_supported"  # type: ignore[index]


def test_round_robin_takes_deployments_in_turn(oai: openai.OpenAI) -> None:
    served = [oai.chat.completions.with_raw_response.create(model="rr", messages=USER)  # type: ignore[arg-type]
              .headers["x-switchboard-deployment"] for _ in range(6)]
    assert served[:3] == served[3:] and sorted(served[:3]) == ["rr-1", "rr-2", "rr-3"]


def test_feedback_endpoint(gateway: GatewayThread, oai: openai.OpenAI) -> None:
    rid = oai.chat.completions.with_raw_response.create(
        model="learner", messages=USER).headers["x-request-id"]  # type: ignore[arg-type]
    status, out, _ = post(gateway, "/v1/feedback", {"request_id": rid, "thumbs": "up"})
    assert status == 200 and out["learned"] is True and out["router"] == "learner" and out["reward"] == 1.0
    status, out, _ = post(gateway, "/v1/feedback", {"request_id": rid, "score": 0.25, "weight": 2})
    assert status == 200 and out["reward"] == 0.25
    status, err, headers = post(gateway, "/v1/feedback", {"request_id": rid, "score": 3})
    assert status == 400 and err["error"]["param"] == "score" and headers["x-request-id"]
    status, err, _ = post(gateway, "/v1/feedback", {"request_id": rid})
    assert status == 400 and err["error"]["type"] == "invalid_request_error"
    status, err, _ = post(gateway, "/v1/feedback", {"request_id": "req_nope", "thumbs": "up"})
    assert status == 404 and err["error"]["param"] == "request_id"
    # A request that did not go through a router has nothing to learn from.
    plain = oai.chat.completions.with_raw_response.create(model="fast", messages=USER)  # type: ignore[arg-type]
    status, err, _ = post(gateway, "/v1/feedback", {"request_id": plain.headers["x-request-id"], "thumbs": "up"})
    assert status == 404


async def test_feedback_moves_traffic_and_survives_a_restart(sim: SimThread, tmp_path: Path) -> None:
    config = routing_config(sim, tmp_path)
    request = ChatRequest("learner", [Message("user", [TextPart("Summarise the plot of Hamlet")])], max_tokens=5)
    served: list[str] = []
    greedy: list[str] = []
    # Seeded draws make the run reproducible; what it shows holds for every seed tried.
    async with Gateway(config, rng=random.Random(11)) as gw:
        for _ in range(60):
            ctx = RequestContext.create(endpoint="chat")
            await gw.chat(request, ctx)
            model = ctx.record.public_model
            assert model is not None and ctx.record.route is not None
            served.append(model)
            greedy.append(ctx.record.route["steps"][-1]["detail"]["greedy"])
            # Simulated users: the large model's answers please them, the small one's do not.
            await gw.feedback(ctx.request_id, Feedback.thumbs(up=model == "sim-claude"))
    assert greedy[0] == "sim-gpt-small" and greedy[-1] == "sim-claude"  # the prior's choice, then feedback's
    late = Counter(served[-20:])
    assert late["sim-claude"] >= 16, served
    # What was learned is saved when the gateway stops and restored when the next one starts.
    async with Gateway(config) as gw:
        await gw.wait_ready()
        plan = await gw.plan(request)
        assert plan.decision is not None and plan.decision.model == "sim-claude"


async def test_the_gateway_is_ready_once_its_routers_are_warm(sim: SimThread, monkeypatch: pytest.MonkeyPatch) -> None:
    """/health/ready answers 503 "warming" while the routers load their models and embed their examples, so a
    load balancer sends no request to a router that is not ready; 200 after."""
    loaded = asyncio.Event()

    async def slow_warm(router: Any) -> None:
        await loaded.wait()

    monkeypatch.setattr("switchboard.gateway.warm", slow_warm)
    cfg = parse_config({**gateway_config_for_fleet(DEFAULT_FLEET, sim.base_url), "records": {"enabled": False},
                        "routers": {"auto": {"models": ["sim-gpt-small", "sim-gpt-large"]}}}, env={})
    app = create_app(cfg)
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    async def ready() -> tuple[int, bytes]:
        sent.clear()
        await app({"type": "http", "method": "GET", "path": "/health/ready", "query_string": b"", "headers": [],
                   "http_version": "1.1"}, receive, send)
        return sent[0]["status"], sent[-1]["body"]

    async with app.gateway:
        assert await ready() == (503, b'{"status":"warming"}')
        loaded.set()
        await app.gateway.wait_ready()
        assert await ready() == (200, b'{"status":"ready"}')
