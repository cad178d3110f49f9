"""Shared fixtures: a tiny simulated world, generated once per test session."""

from __future__ import annotations

from pathlib import Path

import pytest

from data.world.generate import generate_world

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def tiny_world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("worlds") / "tiny"
    generate_world(out, scale="tiny", seed=7)
    return out
