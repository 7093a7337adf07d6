"""The ``switchboard`` command.

Usage::

    switchboard serve [--host H] [--port P] [--config FILE] [--workers N]
    switchboard sim [--port P] [--fleet FILE]
    switchboard check-config FILE
    switchboard logs [--since 1h] [--model M] [--errors] [--json]
    switchboard router train --data FILES --out DIR [--models M …] [--seed N]
    switchboard router eval --data FILES [--train FILES] [--model DIR] [--plot PNG] [--json]
    switchboard route explain --model auto "text"
    switchboard report [--since 24h] [--by public_model] [--reference MODEL] [--csv | --json]
    switchboard keys create|list|show|update|rotate|revoke|audit [--url URL] [--json] …
    switchboard erase --user U | --key-id ID [--url URL]
"""

from __future__ import annotations

import argparse
import sys

from switchboard import __version__

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    from switchboard.cli import check_config, logs, router, serve

    parser = argparse.ArgumentParser(prog="switchboard", description="An AI router for LLM deployments.")
    parser.add_argument("--version", action="version", version=f"switchboard {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    serve.add_parser(sub)
    sim = sub.add_parser("sim", help="run the simulated providers (OpenAI, Anthropic and Gemini wire formats)",
                         add_help=False)
    sim.add_argument("sim_args", nargs=argparse.REMAINDER)
    check_config.add_parser(sub)
    from switchboard.cli import keys, report, route

    route.add_parser(sub)
    report.add_parser(sub)
    logs.add_parser(sub)
    router.add_parser(sub)
    keys.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args_list = sys.argv[1:] if argv is None else argv
    if args_list[:1] == ["sim"]:
        from switchboard.sim.server import main as sim_main

        return sim_main(args_list[1:])
    parser = build_parser()
    args = parser.parse_args(args_list)
    if args.command is None:
        parser.print_help()
        return 2
    result: int = args.run(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
