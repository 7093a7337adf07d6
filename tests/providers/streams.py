"""Flattening a provider's batched stream into single events, for tests that step through it."""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator

from switchboard.schemas.canonical import StreamEvent


async def flat(batches: AsyncIterator[list[StreamEvent]]) -> AsyncGenerator[StreamEvent, None]:
    """One event at a time; closing this closes the provider's stream too."""
    try:
        async for batch in batches:
            for ev in batch:
                yield ev
    finally:
        await batches.aclose()  # type: ignore[attr-defined]
