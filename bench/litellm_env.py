"""The LiteLLM proxy used for comparison: a throwaway virtualenv, its config and how to start it offline.

LiteLLM is never a project dependency. It is installed from the fully pinned
``bench/litellm-requirements.txt`` into ``~/.cache/switchboard-bench/litellm-<version>-py<X.Y>``
(or ``$SWITCHBOARD_BENCH_CACHE/...``), once; a marker with the lock file's hash says the install is
complete and current.

Offline pitfalls handled here (checked with strace on 1.106.2):

* At import it fetches the model cost map from raw.githubusercontent.com, retrying 3 times
  (startup 6 s → 14 s when DNS fails fast; longer where connections hang):
  ``LITELLM_LOCAL_MODEL_COST_MAP=True`` uses the bundled copy.
* It refuses to start without a master key: a random ``LITELLM_MASTER_KEY`` is set and sent by the
  load generator as ``Authorization: Bearer``.
* It loads ``.env`` from the working directory: it runs in the run's temporary directory.
* It binds 0.0.0.0 by default: ``--host 127.0.0.1``.
* ``--telemetry`` is a no-op in this version; tiktoken vocabularies are bundled (no download).
* It starts with a minimal environment, so no ``DATABASE_URL``/``REDIS_*``/provider keys leak in.

Usage::

    env = ensure_installed(log=print)
    argv = env.command(config_path, port)
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "DEFAULT_LOGGING",
    "LITELLM_VERSION",
    "LOCK_FILE",
    "LiteLLMEnv",
    "default_venv_dir",
    "ensure_installed",
    "write_config",
    "write_router_config",
]

LITELLM_VERSION = "1.106.2"
LOCK_FILE = Path(__file__).with_name("litellm-requirements.txt")
_MARKER = ".switchboard-bench-lock.sha256"
_INSTALL_TIMEOUT_S = 1200

# What LiteLLM logs by default without a database, as stated in the report.
DEFAULT_LOGGING = ("no database (no spend logs), no callbacks; uvicorn access log of every request "
                   "to stdout (redirected to a file)")


def default_venv_dir() -> Path:
    base = os.environ.get("SWITCHBOARD_BENCH_CACHE") or str(Path.home() / ".cache" / "switchboard-bench")
    py = f"{sys.version_info.major}.{sys.version_info.minor}"
    return Path(base) / f"litellm-{LITELLM_VERSION}-py{py}"


@dataclass(frozen=True, slots=True)
class LiteLLMEnv:
    """An installed LiteLLM proxy and a fresh master key for this run."""

    venv: Path
    version: str
    master_key: str

    @property
    def executable(self) -> Path:
        return self.venv / "bin" / "litellm"

    def command(self, config: Path, port: int) -> list[str]:
        return [str(self.executable), "--config", str(config), "--host", "127.0.0.1",
                "--port", str(port), "--num_workers", "1"]

    def environment(self, home: Path) -> dict[str, str]:
        """A minimal environment: nothing from the caller's shell but PATH basics and locale."""
        return {
            "PATH": f"{self.venv / 'bin'}:/usr/local/bin:/usr/bin:/bin",
            "HOME": str(home),
            "LANG": "C.UTF-8",
            "LITELLM_LOCAL_MODEL_COST_MAP": "True",
            "LITELLM_MASTER_KEY": self.master_key,
        }


def _lock_digest() -> str:
    return hashlib.sha256(LOCK_FILE.read_bytes()).hexdigest()


def _installed_version(venv: Path) -> str:
    out = subprocess.run(
        [str(venv / "bin" / "python"), "-c", "import importlib.metadata as m; print(m.version('litellm'))"],
        check=True, capture_output=True, text=True, timeout=60,
    )
    return out.stdout.strip()


def ensure_installed(venv: Path | None = None, *, log: Callable[[str], None]) -> LiteLLMEnv:
    """Install the pinned LiteLLM proxy into ``venv`` unless it is already there and current."""
    venv = venv or default_venv_dir()
    marker = venv / _MARKER
    digest = _lock_digest()
    ready = marker.is_file() and marker.read_text().strip() == digest and (venv / "bin" / "litellm").exists()
    if not ready:
        log(f"installing litellm[proxy]=={LITELLM_VERSION} into {venv} (one time, ~1 min) …")
        if venv.exists():
            shutil.rmtree(venv)
        venv.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
        subprocess.run(
            [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
             "-r", str(LOCK_FILE)],
            check=True, timeout=_INSTALL_TIMEOUT_S,
        )
        marker.write_text(digest + "\n")
    version = _installed_version(venv)
    if version != LITELLM_VERSION:
        raise RuntimeError(f"{venv} holds litellm {version}, expected {LITELLM_VERSION}")
    return LiteLLMEnv(venv=venv, version=version, master_key="sk-bench-" + secrets.token_hex(32))


def write_config(path: Path, upstream_base_url: str, models: Iterable[str], api_key: str) -> None:
    """A proxy config routing each model name to the same-named model of an OpenAI-compatible upstream."""
    lines = ["model_list:"]
    for name in models:
        lines += [
            f"  - model_name: {name}",
            "    litellm_params:",
            f"      model: openai/{name}",
            f'      api_base: "{upstream_base_url}"',
            f"      api_key: {api_key}",
        ]
    path.write_text("\n".join(lines) + "\n")


def write_router_config(path: Path, groups: Mapping[str, Iterable[str]], upstream_base_url: str, api_key: str,
                        router_settings: Mapping[str, Any]) -> None:
    """A proxy config with model groups (public name → upstream models of one OpenAI-compatible
    upstream, one deployment each, ``model_info.id`` = ``group/model``) and the given ``router_settings``."""
    doc = {
        "model_list": [
            {"model_name": group,
             "litellm_params": {"model": f"openai/{m}", "api_base": upstream_base_url, "api_key": api_key},
             "model_info": {"id": f"{group}/{m}"}}
            for group, models in groups.items() for m in models
        ],
        "router_settings": dict(router_settings),
    }
    path.write_text(json.dumps(doc, indent=2) + "\n")  # JSON is YAML
