"""A second OS process for test_limits: connects, prints ``ready``, waits for ``go`` on stdin, then makes
its admissions at once and prints how many were admitted.

Usage: ``python limits_worker.py URL PREFIX SUBJECT '{"budget_total": 5.0}' COUNT NOW``
"""

from __future__ import annotations

import asyncio
import json
import sys

from switchboard.policy.limits import Ask, Limits, Scope
from switchboard.policy.limits_redis import RedisLimiter


async def main(url: str, prefix: str, subject: str, limits: str, count: int, now: float) -> None:
    limiter = RedisLimiter(url, prefix=prefix)
    try:
        await limiter.ping()
        print("ready", flush=True)
        if sys.stdin.readline().strip() != "go":  # blocking on purpose: nothing else runs in this process
            raise SystemExit("expected go")
        scope = Scope(subject, Limits(**json.loads(limits)))
        asks = [Ask(f"worker-{i}", (scope,), tokens=10, cost=1.0, ttl=60.0, now=now) for i in range(count)]
        admissions = await asyncio.gather(*(limiter.admit(a) for a in asks))
        print(sum(a.admitted for a in admissions), flush=True)
    finally:
        await limiter.aclose()


if __name__ == "__main__":
    url, prefix, subject, limits, count, now = sys.argv[1:]
    asyncio.run(main(url, prefix, subject, limits, int(count), float(now)))
