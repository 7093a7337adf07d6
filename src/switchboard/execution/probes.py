"""Active health probes: a deployment whose breaker is open gets a one-token request every
``breaker.probe_interval`` seconds; an answer turns its breaker half-open, so traffic comes back as
soon as the upstream does instead of after the whole cooldown.

Usage::

    prober = HealthProber(breakers, {dep.id: ProbeTarget(provider, dep, 10.0, "chat")})
    prober.start()          # inside a running event loop
    await prober.aclose()
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from switchboard.config.model import DeploymentConfig
from switchboard.errors import SwitchboardError
from switchboard.execution.breaker import BreakerBoard
from switchboard.providers.base import CallOptions, Provider
from switchboard.schemas.canonical import ChatRequest, EmbeddingRequest, Message, TextPart
from switchboard.schemas.ids import new_id

__all__ = ["HealthProber", "ProbeTarget"]

log = logging.getLogger("switchboard")


@dataclass(frozen=True, slots=True)
class ProbeTarget:
    """A deployment that is probed while its breaker is open, and how often."""

    provider: Provider
    deployment: DeploymentConfig
    interval: float
    kind: Literal["chat", "embedding"] = "chat"


class HealthProber:
    """Probes open deployments in the background; one task for all of them."""

    def __init__(self, breakers: BreakerBoard, targets: Mapping[str, ProbeTarget], *, timeout: float = 10.0) -> None:
        self._breakers = breakers
        self._targets = dict(targets)
        self._timeout = timeout
        self._task: asyncio.Task[None] | None = None
        self._next: dict[str, float] = {}

    def start(self) -> None:
        """Start probing (a no-op when no deployment asks for probes or it already runs)."""
        if self._targets and self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="switchboard-health-probes")

    async def aclose(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self) -> None:
        tick = min(t.interval for t in self._targets.values())
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(tick)  # a period, not a synchronisation: probes are paced by the clock
            now = loop.time()
            due = [d for d in self._breakers.unavailable() if d in self._targets
                   and self._breakers.get(d).state == "open" and self._next.get(d, 0.0) <= now]
            for d in due:
                self._next[d] = now + self._targets[d].interval
            if due:
                await asyncio.gather(*(self._probe(d) for d in due))

    async def _probe(self, deployment_id: str) -> None:
        target = self._targets[deployment_id]
        dep = target.deployment
        opts = CallOptions(new_id("probe_"), timeout=self._timeout)
        try:
            async with asyncio.timeout(self._timeout):
                if target.kind == "embedding":
                    await target.provider.embed(EmbeddingRequest(dep.model, ["ping"]), dep, opts)
                else:
                    ping = ChatRequest(dep.model, [Message("user", [TextPart("ping")])], max_tokens=1)
                    await target.provider.chat(ping, dep, opts)
        except (SwitchboardError, TimeoutError) as exc:
            log.info("health probe of %s failed: %s", deployment_id, exc)
            return
        log.info("health probe of %s answered: letting traffic try it again", deployment_id)
        self._breakers.get(deployment_id).probe_passed()
