"""Fixtures of the log tests: a fresh embedded log in a temporary data directory."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from everstream.log import EmbeddedLog


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture
def log(data_dir: Path) -> Iterator[EmbeddedLog]:
    lg = EmbeddedLog(data_dir)
    yield lg
    lg.close()
