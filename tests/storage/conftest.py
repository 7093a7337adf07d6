from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from switchboard.config.model import RecordsConfig


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "records.db"


@pytest.fixture
def records_config(db_path: Path) -> Callable[..., RecordsConfig]:
    def build(**overrides: object) -> RecordsConfig:
        values: dict[str, object] = {"path": str(db_path), "flush_interval": 3600.0}
        values.update(overrides)
        return RecordsConfig.model_validate(values)

    return build
