"""``switchboard check-config``: validate a configuration file and name the path of every bad field.

Usage::

    switchboard check-config switchboard.yaml
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from switchboard.config.load import ConfigError, load_config

__all__ = ["add_parser", "run"]


def add_parser(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser("check-config", help="validate a configuration file")
    p.add_argument("path", nargs="?", default="switchboard.yaml", help="the YAML file (default: switchboard.yaml)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    try:
        cfg = load_config(args.path, env=os.environ)
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        return 1
    n_dep = sum(len(m.deployments) for m in cfg.models.values())
    n_alias = sum(len(m.aliases) for m in cfg.models.values())
    print(f"{args.path}: OK — {len(cfg.providers)} providers, {len(cfg.models)} models "
          f"({n_alias} aliases, {n_dep} deployments)")
    for name, model in cfg.models.items():
        deps = ", ".join(f"{d.id} (weight {d.weight:g})" for d in model.deployments)
        alias = f" [aliases: {', '.join(model.aliases)}]" if model.aliases else ""
        print(f"  {name}{alias} → {deps}")
    return 0
