"""The engine settings: their sources, the size of a local cluster, and an address with no scheduler."""

from __future__ import annotations

import logging
import socket

import pytest

from data.engine import EngineSettings, engine_client
from data.errors import ConfigError
from data.threads import all_cores
from search.cli.common import on_cluster
from search.settings import load_settings


def test_defaults_start_a_local_cluster_on_every_core() -> None:
    s = EngineSettings()
    assert s.is_local and s.address is None
    assert s.local_workers() == all_cores()
    assert EngineSettings(workers=3).local_workers() == 3
    assert EngineSettings(workers=2).describe() == "dask local 2 workers"


def test_settings_from_the_environment_and_the_cluster_option(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SMARTBLOCK_ENGINE__ADDRESS", "tcp://10.0.0.5:8786")
    monkeypatch.setenv("SMARTBLOCK_ENGINE__WORKERS", "1")
    settings = load_settings()
    assert settings.engine == EngineSettings(address="tcp://10.0.0.5:8786", workers=1)
    moved = on_cluster(settings, "tcp://scheduler:8786")
    assert moved.engine.address == "tcp://scheduler:8786" and moved.engine.workers == 1
    assert on_cluster(settings, None) is settings


def test_no_scheduler_at_the_address_is_a_config_error() -> None:
    with socket.socket() as s:  # a port that nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    settings = EngineSettings(address=f"tcp://127.0.0.1:{port}", connect_timeout_s=1.0)
    with pytest.raises(ConfigError, match="no Dask scheduler answers"), engine_client(settings):
        pass


def test_a_cluster_without_workers_is_a_config_error_not_a_hang() -> None:
    from distributed import LocalCluster

    with LocalCluster(n_workers=0, processes=False, dashboard_address=None) as cluster:
        settings = EngineSettings(address=cluster.scheduler_address, connect_timeout_s=1.0)
        with pytest.raises(ConfigError, match="has no workers"), engine_client(settings):
            pass


def test_a_local_cluster_passes_on_no_chatter_of_its_scheduler(caplog: pytest.LogCaptureFixture) -> None:
    # A root logger at INFO, as any library's bare logging call leaves one: the scheduler and nannies that
    # live in this process must not print their connection and shutdown chatter through it.
    import distributed  # noqa: F401  sets its logger's level when first imported

    caplog.set_level(logging.INFO)
    before = logging.getLogger("distributed").level
    with engine_client(EngineSettings(workers=1)) as client:
        assert client.submit(sum, [1, 2]).result() == 3
    chatter = [
        r.getMessage()
        for r in caplog.records
        if r.name.startswith("distributed") and r.levelno < logging.WARNING
    ]
    assert chatter == []
    assert logging.getLogger("distributed").level == before
