"""One MiniLM encoder per session: loading reads and hashes ~90 MB."""

from __future__ import annotations

import pytest

from switchboard.routing.embeddings import MiniLMEncoder


@pytest.fixture(scope="session")
def encoder() -> MiniLMEncoder:
    return MiniLMEncoder(batch_size=4)
