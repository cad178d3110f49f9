"""Fixtures of the feature-store tests; the real Redis (``redis_base_settings``, ``store``: a namespace per
test, left empty) comes from tests/conftest.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from data.layout import DataLayout
from features.block_attributes import BlockAttributes


@pytest.fixture(scope="session")
def tiny_catalog(tiny_world: Path) -> BlockAttributes:
    layout = DataLayout(tiny_world)
    return BlockAttributes.from_tables(layout.read_blocks(), layout.read_docs())
