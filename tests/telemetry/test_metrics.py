"""Prometheus metrics: the exposition format, the numbers, the label cap and the merge over workers."""

from __future__ import annotations

import asyncio
import math
import multiprocessing
import re
from dataclasses import dataclass, field
from pathlib import Path

import orjson
import pytest

from switchboard.storage.records import SinkStats
from switchboard.telemetry.metrics import CONTENT_TYPE, DURATION_BUCKETS, Metrics, loop_lag_probe
from switchboard.telemetry.prometheus import Family
from switchboard.telemetry.record import Attempt, RequestRecord

# -- a strict parser for the text format 0.0.4 ---------------------------------------------------

_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_LABEL = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
_FLOAT = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?|[+-]Inf|NaN")
_SUFFIXES = {"counter": ("",), "gauge": ("",), "histogram": ("_bucket", "_sum", "_count")}

Labels = tuple[tuple[str, str], ...]


@dataclass
class Parsed:
    kind: str
    help: str
    samples: dict[tuple[str, Labels], float] = field(default_factory=dict)


def parse(text: str) -> dict[str, Parsed]:
    """Parse an exposition, failing on anything the format (or our own rules) does not allow."""
    assert text.endswith("\n"), "the exposition must end with a newline"
    families: dict[str, Parsed] = {}
    current: str | None = None
    pending_help: tuple[str, str] | None = None
    for line in text[:-1].split("\n"):
        if line.startswith("# HELP "):
            name, _, doc = line[7:].partition(" ")
            assert _NAME.fullmatch(name) and name not in families, line
            pending_help = (name, _unescape_help(doc))
        elif line.startswith("# TYPE "):
            name, _, kind = line[7:].partition(" ")
            assert pending_help is not None and pending_help[0] == name, f"TYPE without HELP just before: {line}"
            assert kind in _SUFFIXES, line
            families[name] = Parsed(kind, pending_help[1])
            current, pending_help = name, None
        else:
            assert not line.startswith("#") and line, f"unexpected line {line!r}"
            assert current is not None, f"sample before any TYPE: {line}"
            sample, labels, value = _sample(line)
            family = families[current]
            assert sample in {current + s for s in _SUFFIXES[family.kind]}, f"{sample} outside family {current}"
            assert (sample, labels) not in family.samples, f"duplicate sample {line}"
            family.samples[(sample, labels)] = value
    for name, family in families.items():
        if family.kind == "histogram":
            _check_histogram(name, family)
    return families


def _sample(line: str) -> tuple[str, Labels, float]:
    m = _NAME.match(line)
    assert m, line
    name, i = m.group(), m.end()
    labels: list[tuple[str, str]] = []
    if line[i] == "{":
        i += 1
        while line[i] != "}":
            lm = _LABEL.match(line, i)
            assert lm and line[lm.end():lm.end() + 2] == '="', line
            i = lm.end() + 2
            value = []
            while line[i] != '"':
                if line[i] == "\\":
                    value.append({"\\": "\\", '"': '"', "n": "\n"}[line[i + 1]])
                    i += 2
                else:
                    value.append(line[i])
                    i += 1
            labels.append((lm.group(), "".join(value)))
            i += 1
            if line[i] == ",":
                i += 1
                assert line[i] != "}", f"trailing comma: {line}"
        i += 1
        assert len({k for k, _ in labels}) == len(labels), f"repeated label: {line}"
    assert line[i] == " ", line
    raw = line[i + 1:]
    assert _FLOAT.fullmatch(raw), f"bad value {raw!r}"
    return name, tuple(labels), float(raw)


def _unescape_help(text: str) -> str:
    assert not re.search(r"\\[^\\n]", text), text
    return text.replace("\\n", "\n").replace("\\\\", "\\")


def _check_histogram(name: str, family: Parsed) -> None:
    groups: dict[Labels, list[tuple[float, float]]] = {}
    for (sample, labels), value in family.samples.items():
        if sample.endswith("_bucket"):
            le = dict(labels)["le"]
            assert labels[-1][0] == "le"
            groups.setdefault(labels[:-1], []).append((float(le), value))
    for labels, buckets in groups.items():
        bounds = [b for b, _ in buckets]
        assert bounds == sorted(bounds) and bounds[-1] == math.inf, f"{name}: buckets out of order"
        counts = [c for _, c in buckets]
        assert counts == sorted(counts), f"{name}: buckets not cumulative"
        assert family.samples[(name + "_count", labels)] == counts[-1]
        assert (name + "_sum", labels) in family.samples


def value(families: dict[str, Parsed], sample: str, **labels: str) -> float:
    """The one sample named ``sample`` whose labels include ``labels``; 0 when there is none."""
    base = re.sub(r"_(bucket|sum|count)$", "", sample)
    family = families.get(sample) or families[base]
    found = [v for (name, ls), v in family.samples.items()
             if name == sample and labels.items() <= dict(ls).items()]
    assert len(found) <= 1, f"{sample} {labels} matches {len(found)} samples"
    return found[0] if found else 0.0


def total(families: dict[str, Parsed], sample: str, **labels: str) -> float:
    """The sum of the samples named ``sample`` whose labels include ``labels``."""
    family = families.get(sample) or families[re.sub(r"_(bucket|sum|count)$", "", sample)]
    return sum(v for (name, ls), v in family.samples.items() if name == sample and labels.items() <= dict(ls).items())


def scrape(metrics: Metrics) -> dict[str, Parsed]:
    return parse(metrics.render().decode())


# -- records with known numbers ------------------------------------------------------------------


def fallback_record() -> RequestRecord:
    """A chat request whose first deployment failed with a 503; the second answered, streaming."""
    return RequestRecord(
        request_id="req_1", started_at=0.0, endpoint="chat", dialect="openai", caller="alice",
        public_model="fast", deployment="sim/b", provider="sim-openai", stream=True, router="auto",
        latency_ms=1500.0, ttft_ms=300.0, input_tokens=1200, output_tokens=80, cached_tokens=1000,
        reasoning_tokens=20, cost_usd=0.003,
        attempts=[
            Attempt("sim/a", "sim-openai", "error", 100.0, reason="http_503", model="fast"),
            Attempt("sim/a", "sim-openai", "error", 50.0, reason="http_503", model="fast", retry=1),
            Attempt("sim/b", "sim-openai", "ok", 200.0, model="fast", cost_usd=0.003),
        ],
    )


def failed_record() -> RequestRecord:
    return RequestRecord(
        request_id="req_2", started_at=0.0, endpoint="messages", dialect="anthropic", public_model="fast",
        status=503, error_type="NoHealthyDeployment", latency_ms=5.0,
        attempts=[Attempt("sim/a", "sim-openai", "skipped", 0.0, reason="circuit_open", model="fast")],
    )


@pytest.mark.parametrize("text", [
    "a_total 1\n",                                                      # no HELP/TYPE
    "# TYPE a_total counter\na_total 1\n",                             # TYPE without HELP
    "# HELP a_total A.\n# TYPE a_total counter\na_total 1",            # no final newline
    "# HELP a_total A.\n# TYPE a_total counter\nb_total 1\n",         # sample outside its family
    '# HELP a_total A.\n# TYPE a_total counter\na_total{x="1",} 1\n',  # trailing comma
    '# HELP a_total A.\n# TYPE a_total counter\na_total{x="1"} one\n',  # not a number
    "# HELP h H.\n# TYPE h histogram\n"                                 # buckets not cumulative
    'h_bucket{le="1"} 2\nh_bucket{le="+Inf"} 1\nh_sum 1\nh_count 1\n',
])
def test_the_test_parser_is_strict(text: str) -> None:
    with pytest.raises((AssertionError, KeyError, IndexError)):
        parse(text)


def test_empty_exposition_declares_every_family() -> None:
    metrics = Metrics()
    families = scrape(metrics)
    assert set(families) == {f.name for f in metrics.families}
    assert all(f.help for f in families.values())
    assert CONTENT_TYPE == "text/plain; version=0.0.4; charset=utf-8"


def test_naming_rules() -> None:
    for family in Metrics().families:
        # Python's runtime counters keep the names Prometheus' own Python client gives them.
        assert family.name.startswith(("gen_ai_", "switchboard_", "python_gc_"))
        assert (family.kind == "counter") == family.name.endswith("_total"), family.name
        if family.kind == "histogram" and family.name != "gen_ai_client_token_usage":
            assert family.name.endswith("_seconds"), family.name
        for forbidden in ("caller", "request_id", "key", "tag", "user"):
            assert forbidden not in family.labels
    with pytest.raises(ValueError, match="_total"):
        Family("requests", "counter", "Requests.")
    with pytest.raises(ValueError, match="_total"):
        Family("queue_total", "gauge", "Queue.")
    with pytest.raises(ValueError, match="label"):
        Family("x_seconds", "histogram", "X.", ("le",), buckets=(1.0,))
    with pytest.raises(ValueError, match="increasing"):
        Family("x_seconds", "histogram", "X.", buckets=(2.0, 1.0))


def test_the_cycle_collectors_runs_are_counted_per_generation() -> None:
    import gc

    gc.collect()  # a full collection: generation 2 has run at least once
    families = parse(Metrics().render().decode())
    after = gc.get_stats()
    for name, stat in (("python_gc_collections_total", "collections"), ("python_gc_objects_collected_total",
                                                                          "collected")):
        seen = {dict(labels)["generation"]: value for (_, labels), value in families[name].samples.items()}
        assert set(seen) == {"0", "1", "2"}
        assert all(0 <= seen[str(g)] <= after[g][stat] for g in range(3))
    assert dict(families["python_gc_collections_total"].samples)[
        ("python_gc_collections_total", (("generation", "2"),))] >= 1


def test_request_counters_durations_and_errors() -> None:
    metrics = Metrics()
    metrics.observe_record(fallback_record())
    metrics.observe_record(failed_record())
    f = scrape(metrics)

    assert value(f, "switchboard_requests_total", endpoint="chat", model="fast", router="auto", deployment="sim/b",
                 provider="sim-openai", status_class="2xx", stream="true") == 1
    assert value(f, "switchboard_requests_total", endpoint="messages", status_class="5xx", stream="false") == 1
    assert value(f, "switchboard_errors_total", endpoint="messages", model="fast",
                 error_type="NoHealthyDeployment", status_class="5xx") == 1
    assert total(f, "switchboard_errors_total") == 1

    # 1.5 s lands in the 2.56 bucket and above; the failed request's 5 ms in every bucket.
    chat = {"endpoint": "chat", "model": "fast", "status_class": "2xx", "stream": "true"}
    assert value(f, "switchboard_request_duration_seconds_bucket", **chat, le="1.28") == 0
    assert value(f, "switchboard_request_duration_seconds_bucket", **chat, le="2.56") == 1
    assert value(f, "switchboard_request_duration_seconds_bucket", **chat, le="+Inf") == 1
    assert value(f, "switchboard_request_duration_seconds_sum", **chat) == pytest.approx(1.5)
    assert value(f, "switchboard_request_duration_seconds_count", **chat) == 1
    assert value(f, "switchboard_request_duration_seconds_bucket", endpoint="messages", le="0.01") == 1
    assert value(f, "switchboard_time_to_first_token_seconds_bucket", deployment="sim/b", le="0.25") == 0
    assert value(f, "switchboard_time_to_first_token_seconds_bucket", deployment="sim/b", le="0.5") == 1
    assert value(f, "switchboard_time_to_first_token_seconds_sum", deployment="sim/b") == pytest.approx(0.3)


def test_attempts_fallbacks_and_upstream_durations() -> None:
    metrics = Metrics()
    metrics.observe_record(fallback_record())
    metrics.observe_record(failed_record())
    f = scrape(metrics)

    assert value(f, "switchboard_attempts_total", deployment="sim/a", outcome="error", reason="http_503") == 2
    assert value(f, "switchboard_attempts_total", deployment="sim/b", outcome="ok", reason="") == 1
    assert value(f, "switchboard_attempts_total", deployment="sim/a", outcome="skipped", reason="circuit_open") == 1
    # The retry of sim/a is no fallback; moving on to sim/b is.
    assert total(f, "switchboard_fallbacks_total") == 1
    assert value(f, "switchboard_fallbacks_total", model="fast", fallback_model="fast", deployment="sim/b") == 1
    # Skipped attempts made no upstream call; failed ones carry their reason as the error type.
    op = "gen_ai_client_operation_duration_seconds"
    assert value(f, op + "_count", deployment="sim/a", error_type="http_503") == 2
    assert value(f, op + "_sum", deployment="sim/a", error_type="http_503") == pytest.approx(0.15)
    assert value(f, op + "_count", gen_ai_operation_name="chat", gen_ai_provider_name="sim-openai",
                 gen_ai_request_model="fast", deployment="sim/b", error_type="") == 1
    assert total(f, op + "_count") == 3


def test_tokens_and_cost() -> None:
    metrics = Metrics()
    metrics.observe_record(fallback_record())
    metrics.observe_record(failed_record())  # no usage: no token observation
    f = scrape(metrics)

    usage = "gen_ai_client_token_usage"
    assert value(f, usage + "_sum", gen_ai_request_model="fast", gen_ai_token_type="input") == 1200
    assert value(f, usage + "_sum", gen_ai_request_model="fast", gen_ai_token_type="output") == 80
    assert value(f, usage + "_count", gen_ai_token_type="input") == 1
    assert value(f, usage + "_bucket", gen_ai_token_type="input", le="1024") == 0
    assert value(f, usage + "_bucket", gen_ai_token_type="input", le="4096") == 1
    tokens = "switchboard_tokens_total"
    assert {t: value(f, tokens, deployment="sim/b", token_type=t) for t in ("input", "output", "cached_input",
                                                                              "reasoning")} == {
        "input": 1200, "output": 80, "cached_input": 1000, "reasoning": 20}
    assert value(f, "switchboard_cost_usd_total", model="fast", router="auto", deployment="sim/b",
                 provider="sim-openai") == pytest.approx(0.003)


def test_cost_of_lost_hedges_goes_to_their_deployment() -> None:
    rec = RequestRecord(
        request_id="r", started_at=0.0, endpoint="chat", dialect="openai", public_model="fast", deployment="sim/a",
        provider="p", cost_usd=0.005, latency_ms=10.0,
        attempts=[Attempt("sim/a", "p", "ok", 10.0, cost_usd=0.004),
                  Attempt("sim/b", "p", "error", 10.0, reason="hedge_lost", hedge=True, cost_usd=0.001)])
    rest = RequestRecord(request_id="s", started_at=0.0, endpoint="embeddings", dialect="openai",
                         public_model="embed", deployment="sim/e", provider="p", cost_usd=0.002, input_tokens=3)
    metrics = Metrics()
    metrics.observe_record(rec)
    metrics.observe_record(rest)  # no attempt carries the cost: it goes to the deployment that answered
    f = scrape(metrics)
    assert value(f, "switchboard_cost_usd_total", deployment="sim/a") == pytest.approx(0.004)
    assert value(f, "switchboard_cost_usd_total", deployment="sim/b") == pytest.approx(0.001)
    assert value(f, "switchboard_cost_usd_total", deployment="sim/e") == pytest.approx(0.002)
    assert total(f, "switchboard_fallbacks_total") == 0  # a hedge is not a fallback
    # Embeddings have input tokens only.
    assert value(f, "gen_ai_client_token_usage_count", gen_ai_operation_name="embeddings",
                 gen_ai_token_type="input") == 1
    assert total(f, "gen_ai_client_token_usage_count", gen_ai_operation_name="embeddings") == 1


def test_gauges_breakers_records_and_escaping() -> None:
    metrics = Metrics()
    metrics.request_started("chat")
    metrics.request_started("chat")
    metrics.request_finished("chat")
    metrics.declare_deployments(["sim/a", "sim/b"])
    metrics.breaker_changed("sim/a", "closed", "open")
    metrics.breaker_changed("sim/a", "open", "half_open")
    metrics.watch_records(lambda: SinkStats(queued=7, written=100, dropped=3, write_errors=1, batches=9,
                                            last_error=None))
    odd = 'say "hi"\\\nnow'
    metrics.observe_record(RequestRecord(request_id="r", started_at=0.0, endpoint="chat", dialect="openai",
                                         public_model=odd, status=400, error_type="InvalidRequest"))
    f = scrape(metrics)

    assert value(f, "switchboard_requests_in_flight", endpoint="chat") == 1
    assert value(f, "switchboard_breaker_state", deployment="sim/a", state="half_open") == 1
    assert value(f, "switchboard_breaker_state", deployment="sim/a", state="open") == 0
    assert value(f, "switchboard_breaker_state", deployment="sim/b", state="closed") == 1
    assert value(f, "switchboard_breaker_transitions_total", deployment="sim/a", state="open") == 1
    assert value(f, "switchboard_records_queued") == 7
    assert value(f, "switchboard_records_written_total") == 100
    assert value(f, "switchboard_records_dropped_total") == 3
    assert value(f, "switchboard_record_write_errors_total") == 1
    assert value(f, "switchboard_metrics_workers") == 1
    assert value(f, "switchboard_errors_total", model=odd, status_class="4xx") == 1


def test_label_sets_are_capped_into_other() -> None:
    metrics = Metrics(max_series=5)
    for i in range(20):
        metrics.observe_record(RequestRecord(request_id=f"r{i}", started_at=0.0, endpoint="chat", dialect="openai",
                                             public_model=f"model-{i}", latency_ms=1.0))
    metrics.observe_record(RequestRecord(request_id="long", started_at=0.0, endpoint="chat", dialect="openai",
                                         public_model="x" * 500))
    f = scrape(metrics)
    requests = f["switchboard_requests_total"].samples
    assert len(requests) == 6
    assert sum(requests.values()) == 21
    assert value(f, "switchboard_requests_total", model="other", endpoint="other") == 16
    assert value(f, "switchboard_metrics_overflow_total", metric="switchboard_requests_total") == 16
    assert value(f, "switchboard_request_duration_seconds_count", model="other") == 16


# -- several workers -----------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_workers_merge_through_the_directory(tmp_path: Path) -> None:
    clock = Clock()
    a = Metrics(tmp_path, worker_id="a", clock=clock)
    b = Metrics(tmp_path, worker_id="b", clock=clock)
    a.observe_record(fallback_record())
    a.observe_record(fallback_record())
    b.observe_record(fallback_record())
    b.observe_record(failed_record())
    a.request_started("chat")
    b.request_started("chat")
    a.breaker_changed("sim/a", "closed", "open")
    b.declare_deployments(["sim/a"])
    a.write_snapshot()

    f = scrape(b)  # b's own series are read live, a's from its file
    assert value(f, "switchboard_requests_total", endpoint="chat", status_class="2xx") == 3
    assert value(f, "switchboard_request_duration_seconds_count", endpoint="chat") == 3
    assert value(f, "switchboard_request_duration_seconds_sum", endpoint="chat") == pytest.approx(4.5)
    assert value(f, "switchboard_request_duration_seconds_bucket", endpoint="chat", le="2.56") == 3
    assert value(f, "switchboard_cost_usd_total", deployment="sim/b") == pytest.approx(0.009)
    assert value(f, "switchboard_requests_in_flight", endpoint="chat") == 2
    assert value(f, "switchboard_breaker_state", deployment="sim/a", state="open") == 1
    assert value(f, "switchboard_breaker_state", deployment="sim/a", state="closed") == 1
    assert value(f, "switchboard_metrics_workers") == 2

    # A worker whose snapshot went stale (it died): its counts stay, its gauges go.
    clock.now += b.stale_after + 1
    f = scrape(b)
    assert value(f, "switchboard_requests_total", endpoint="chat", status_class="2xx") == 3
    assert value(f, "switchboard_requests_in_flight", endpoint="chat") == 1
    assert value(f, "switchboard_metrics_workers") == 1
    assert value(f, "switchboard_breaker_state", deployment="sim/a", state="open") == 0

    # Unreadable files and files of another format are skipped.
    (tmp_path / "worker-c.json").write_bytes(b"{not json")
    (tmp_path / "worker-d.json").write_bytes(orjson.dumps({"format": 99, "families": {}}))
    (tmp_path / "worker-e.json").write_bytes(orjson.dumps(
        {"format": 1, "time": clock.now, "live": True,
         "families": {"switchboard_requests_total": [[["too", "few"], [5]]], "switchboard_records_queued": "x"}}))
    f = scrape(b)
    assert value(f, "switchboard_requests_total", endpoint="chat", status_class="2xx") == 3


async def test_observe_record_does_no_io(tmp_path: Path) -> None:
    # Inside a coroutine the blockbuster guard fails any blocking call; nothing lands on disk either.
    metrics = Metrics(tmp_path, worker_id="w")
    for _ in range(100):
        metrics.observe_record(fallback_record())
        metrics.request_started("chat")
        metrics.request_finished("chat")
        metrics.breaker_changed("sim/a", "closed", "open")
    assert await asyncio.to_thread(lambda: list(tmp_path.iterdir())) == []


async def test_snapshots_are_written_off_the_loop_and_marked_at_close(tmp_path: Path) -> None:
    a = Metrics(tmp_path, worker_id="a")
    b = Metrics(tmp_path, worker_id="b")
    a.start(loop_lag_interval=None)
    b.start(loop_lag_interval=None)
    a.observe_record(fallback_record())
    a.request_started("chat")
    await a.flush()
    f = parse((await b.arender()).decode())
    assert value(f, "switchboard_requests_total", endpoint="chat") == 1
    assert value(f, "switchboard_requests_in_flight", endpoint="chat") == 1

    await a.aclose()  # the last snapshot: counters stay, the gauges of a stopped worker do not
    f = parse((await b.arender()).decode())
    assert value(f, "switchboard_requests_total", endpoint="chat") == 1
    assert value(f, "switchboard_requests_in_flight", endpoint="chat") == 0
    assert value(f, "switchboard_metrics_workers") == 1
    await b.aclose()
    names = await asyncio.to_thread(lambda: sorted(p.name for p in tmp_path.iterdir()))
    assert names == ["worker-a.json", "worker-b.json"]


async def test_loop_lag_probe_observes() -> None:
    metrics = Metrics()
    await loop_lag_probe(metrics, 0.001, samples=3)
    f = parse((await metrics.arender()).decode())
    assert value(f, "switchboard_event_loop_lag_seconds_count") == 3
    assert value(f, "switchboard_event_loop_lag_seconds_sum") >= 0


def _worker(directory: str, n: int) -> None:
    """One worker process: count ``n`` records, then shut down as a served worker would."""

    async def main() -> None:
        metrics = Metrics(Path(directory))
        metrics.start(loop_lag_interval=None)
        for _ in range(n):
            metrics.observe_record(fallback_record())
        await metrics.aclose()

    asyncio.run(main())


def test_real_worker_processes_add_up(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("spawn")  # forking a threaded test runner is unsafe
    procs = [ctx.Process(target=_worker, args=(str(tmp_path), n)) for n in (3, 4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    assert len(list(tmp_path.glob("worker-*.json"))) == 2
    f = scrape(Metrics(tmp_path))
    assert value(f, "switchboard_requests_total", endpoint="chat") == 7
    assert value(f, "switchboard_attempts_total", deployment="sim/a", reason="http_503") == 14
    assert value(f, "switchboard_request_duration_seconds_count", endpoint="chat") == 7
    assert value(f, "switchboard_metrics_workers") == 1  # both have exited: only the scraping process


def test_duration_buckets_follow_the_genai_conventions() -> None:
    assert DURATION_BUCKETS[0] == 0.01 and DURATION_BUCKETS[-1] == 81.92
