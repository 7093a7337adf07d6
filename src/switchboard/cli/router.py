"""``switchboard router``: train the learned quality router and evaluate routers offline.

Each action is a sub-subcommand registered in :data:`ACTIONS`; a new one (``replay``) adds an
``add_<name>(actions)`` function there.

Usage::

    switchboard router train --data 'data/*_train.csv' --out my-router [--models A B …] [--seed 0]
    switchboard router eval --data 'data/*_test.csv' --train 'data/*_train.csv' [--model my-router]
                            [--plot curve.png] [--json]
    switchboard router build-encoder [--cache-dir DIR] [--force]
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeAlias

from switchboard.eval.dataset import DatasetError, expand_paths, load_outcomes

__all__ = ["ACTIONS", "add_parser", "run_build_encoder", "run_eval", "run_train"]

if TYPE_CHECKING:
    _Actions: TypeAlias = argparse._SubParsersAction[argparse.ArgumentParser]


def add_parser(sub: _Actions) -> None:
    p = sub.add_parser("router", help="train and evaluate the learned router",
                       description="Train the learned quality router and evaluate routers offline.")
    actions = p.add_subparsers(dest="router_command", metavar="ACTION")
    for register in ACTIONS:
        register(actions)
    p.set_defaults(run=lambda args: _usage(p))


def _usage(p: argparse.ArgumentParser) -> int:
    p.print_help(sys.stderr)
    return 2


def add_train(actions: _Actions) -> None:
    p = actions.add_parser("train", help="train a quality model on outcome files",
                           description="Train a quality model; the ridge penalty is chosen by cross-validation.")
    p.add_argument("--data", nargs="+", required=True, help="training files or globs (.csv RouterBench, .jsonl)")
    p.add_argument("--out", required=True, help="the model directory to write")
    p.add_argument("--models", nargs="+", help="only these models (default: every model in the data)")
    p.add_argument("--seed", type=int, default=0, help="cross-validation fold seed (default: 0)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(run=run_train)


def add_eval(actions: _Actions) -> None:
    p = actions.add_parser("eval", help="compare routers on outcome files",
                           description="Evaluate baselines, the learned router and the oracle side by side.")
    p.add_argument("--data", nargs="+", required=True, help="test files or globs (.csv RouterBench, .jsonl)")
    p.add_argument("--train", nargs="+", help="training files or globs (for the per-task best baseline)")
    p.add_argument("--model", help="a model directory (default: the shipped model)")
    p.add_argument("--strong", help="strong model of the APGR pair (default: gpt-4-1106-preview if present)")
    p.add_argument("--weak", help="weak model of the APGR pair (default: mixtral-8x7b-chat if present)")
    p.add_argument("--plot", help="write the cost-quality plot to this PNG")
    p.add_argument("--json", action="store_true", help="print the figures as JSON")
    p.add_argument("--seed", type=int, default=0, help="seed of the random router (default: 0)")
    p.set_defaults(run=run_eval)


def add_replay(actions: _Actions) -> None:
    from switchboard.cli import replay

    replay.add_parser(actions)


def add_build_encoder(actions: _Actions) -> None:
    p = actions.add_parser("build-encoder", help="build the table of semantic.encoder: minilm-static",
                           description="Compute the static token vectors of the minilm-static encoder from the "
                                       "MiniLM weights and cache them (about half a minute on one core); a "
                                       "gateway otherwise builds them when it first needs them.")
    p.add_argument("--cache-dir", help="where to keep the table (default: SWITCHBOARD_CACHE_DIR, else "
                                       "$XDG_CACHE_HOME/switchboard, else ~/.cache/switchboard)")
    p.add_argument("--force", action="store_true", help="build it again even when one is cached")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(run=run_build_encoder)


#: The ``switchboard router`` actions, in help order.
ACTIONS: list[Callable[[_Actions], None]] = [add_train, add_eval, add_replay, add_build_encoder]


def _fail(action: str, message: str) -> int:
    print(f"switchboard router {action}: {message}", file=sys.stderr)
    return 2


def run_train(args: argparse.Namespace) -> int:
    try:
        from switchboard.routing.learned.train import TextProgress, train

        data = load_outcomes(expand_paths(args.data))
        model = train(data, models=args.models, seed=args.seed,
                      progress=None if args.quiet else TextProgress(sys.stderr))
        model.save(args.out)
    except (DatasetError, ImportError, OSError) as exc:
        return _fail("train", str(exc))
    cv = model.info.get("cv", {})
    chosen = model.info.get("alpha")
    for alpha, figs in cv.items():
        mark = " (chosen)" if float(alpha) == chosen else ""
        print(f"cv alpha={alpha}: AIQ {figs['aiq']:.4f}  APGR {figs['apgr']:.4f}{mark}")
    print(f"wrote {args.out}: {len(model.models)} models, {len(model.buckets)} feature buckets, "
          f"{model.info['prompts']} prompts")
    return 0


def run_build_encoder(args: argparse.Namespace) -> int:
    try:
        from switchboard.routing.embeddings import EncoderLoadError
        from switchboard.routing.embeddings.static import build_table, table_path
        from switchboard.routing.learned.train import TextProgress

        path = table_path(args.cache_dir)
        if path.exists() and not args.force:
            print(f"{path}: already built (--force builds it again)")
            return 0
        bar = None if args.quiet else TextProgress(sys.stderr)
        build_table(path, progress=None if bar is None else lambda done, total: bar(done, total, "tokens"))
    except (EncoderLoadError, ImportError, OSError) as exc:
        return _fail("build-encoder", str(exc))
    print(f"wrote {path}")
    return 0


def run_eval(args: argparse.Namespace) -> int:
    try:
        from switchboard.eval import baselines as b
        from switchboard.eval.report import Pair, format_table, plot, summarize, summary_json
        from switchboard.routing.learned import load, load_default
        from switchboard.routing.learned.train import default_pair

        test_all = load_outcomes(expand_paths(args.data))
        model = load(args.model) if args.model else load_default()
        models = [m for m in test_all.models if m in model.models] or list(test_all.models)
        test = test_all.select_models(models).complete()
        if len(test) == 0:
            return _fail("eval", "no test prompt has an outcome for every model")
        strong, weak = default_pair(test)
        strong, weak = args.strong or strong, args.weak or weak
        for name in (strong, weak):
            if name not in test.models:
                return _fail("eval", f"model {name} is not in the test data")
        pair = Pair(strong, weak)
        mean_cost = test.costs.mean(axis=0)
        runs = [
            b.always("always-cheapest", test, test.models[int(mean_cost.argmin())]),
            b.always("always-strongest", test, test.models[int(test.scores.mean(axis=0).argmax())]),
            b.random_router(test, seed=args.seed),
            b.zero_router(test),
        ]
        if args.train:
            runs.append(b.per_task_best(load_outcomes(expand_paths(args.train)), test, strong=strong, weak=weak))
        qm = model
        if set(test.models) - set(qm.models):
            return _fail("eval", "the model does not cover: " + ", ".join(sorted(set(test.models) - set(qm.models))))
        cols = [qm.models.index(m) for m in test.models]
        preds = qm.predict_many(test.prompts)[:, cols]
        runs.append(b.predictive("learned", test, preds, [qm.costs[c] for c in cols], strong=strong, weak=weak))
        runs.append(b.oracle(test, strong=strong, weak=weak))
        summaries = [summarize(r, test, pair) for r in runs]
        if args.plot:
            plot(runs, test, args.plot)
    except (DatasetError, ImportError, OSError, ValueError) as exc:
        return _fail("eval", str(exc))
    if args.json:
        print(json.dumps(summary_json(summaries, pair, len(test)), indent=1))
    else:
        print(f"{len(test)} prompts, {len(test.models)} models")
        print(format_table(summaries, pair))
        if args.plot:
            print(f"plot: {args.plot}")
    return 0
