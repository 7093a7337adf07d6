"""Suite-wide guards."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from blockbuster import BlockBuster, blockbuster_ctx


@pytest.fixture(autouse=True, scope="session")
def no_blocking_calls_on_event_loops() -> Iterator[BlockBuster]:
    """Fail any blocking call (file or socket I/O, sleep, …) made on a running event loop — in test
    coroutines and in the gateway and simulator threads alike."""
    with blockbuster_ctx() as bb:
        yield bb
