"""``smartblock serve --workers 2`` over real HTTP, and the transport settings that made two workers slow.

- Every connection gets TCP_NODELAY, also on a listener bound the way uvicorn's multi-worker supervisor
  bound it before uvicorn 0.55 (``proto`` 0: asyncio then left Nagle's algorithm on, and each keep-alive
  response waited ~40 ms for the client's delayed ACK), and on the one the installed uvicorn binds. Checked on
  the server's side of a real connection; no timing.
- A real ``serve --workers 2``: both workers (their pids, children of ``serve``) answer /healthz and /search
  over fresh connections, which the kernel spreads over the workers' SO_REUSEPORT listeners.

Throughput and latency of 1 vs 2 workers are a benchmark, not a test: benchmarks/bench_serving.py.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import psutil
import pytest
import uvicorn
import yaml

from search.settings import Settings
from serving.config import ServingSettings
from serving.transport import HTTP_PROTOCOL, listener


async def _hello(scope: dict, receive: Callable, send: Callable) -> None:
    assert scope["type"] == "http"
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
    await send({"type": "http.response.body", "body": b"ok"})


@pytest.mark.parametrize("bind", ["proto-0-listener", "uvicorn-multiprocess-listener", "worker-listener"])
def test_every_connection_gets_tcp_nodelay(bind: str, free_port: Callable[[], int]) -> None:
    port = free_port()
    config = uvicorn.Config(_hello, host="127.0.0.1", port=port, http=HTTP_PROTOCOL, log_level="warning")
    if bind == "proto-0-listener":
        # What `uvicorn --workers N` handed each worker before 0.55 (0.55 binds with IPPROTO_TCP).
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", port))
        assert sock.proto == 0
    elif bind == "uvicorn-multiprocess-listener":
        sock = config.bind_socket()  # whatever the installed uvicorn hands its workers
    else:
        sock = listener("127.0.0.1", port, reuse_port=True)
        assert sock.proto == socket.IPPROTO_TCP
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 20
        while not server.started:
            assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.02)
        with httpx.Client(base_url=f"http://127.0.0.1:{port}") as client:
            assert client.get("/").text == "ok"
            (conn,) = list(server.server_state.connections)
            accepted = conn.transport.get_extra_info("socket")
            assert accepted.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


@pytest.fixture(scope="module")
def two_workers(
    tmp_path_factory: pytest.TempPathFactory,
    tiny_world: Path,
    base_settings: Settings,
    parts: object,  # the session's indexes are built
    feature_store: object,  # the session's features are in Redis
    trained_versions: list[str],
    free_port: Callable[[], int],
) -> Iterator[tuple[subprocess.Popen, str]]:
    # No consumer: this test is about the API workers (the faults tests cover the consumer).
    serving = ServingSettings(consume_events=False, require_consumer=False, model_poll_s=60)
    settings = base_settings.model_copy(update={"serving": serving})
    folder = tmp_path_factory.mktemp("workers")
    config = folder / "serve.yaml"
    config.write_text(yaml.safe_dump(settings.model_dump(mode="json", exclude={"serving": {"api_key"}})))
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL" and not k.startswith("SMARTBLOCK_")}
    port = free_port()
    log = folder / "serve.log"
    cmd = [sys.executable, "-m", "search.cli", "--config", str(config), "serve", "--world", str(tiny_world)]
    cmd += ["--port", str(port), "--workers", "2", "--log-level", "warning"]
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 240
        while True:
            assert proc.poll() is None, f"serve exited {proc.returncode}:\n{log.read_text()[-3000:]}"
            assert time.monotonic() < deadline, f"serve never became ready:\n{log.read_text()[-3000:]}"
            try:
                if httpx.get(f"{url}/readyz", timeout=5).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        yield proc, url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_serve_with_two_workers_answers_from_both(two_workers: tuple[subprocess.Popen, str]) -> None:
    proc, url = two_workers
    workers = {
        child.pid for child in psutil.Process(proc.pid).children() if "search.serve" in child.cmdline()
    }
    assert len(workers) == 2, workers
    answered: set[int] = set()
    deadline = time.monotonic() + 60
    while answered != workers:
        assert time.monotonic() < deadline, f"only workers {answered} of {workers} answered"
        # A fresh connection each time: the kernel hands it to one worker's listener; health and search
        # on that same keep-alive connection are answered by the same worker.
        with httpx.Client(base_url=url, timeout=30) as client:
            health = client.get("/healthz")
            assert health.status_code == 200, health.text
            worker = health.json()["worker"]
            assert worker in workers
            found = client.get("/search", params={"q": "jeju island", "user_id": f"u-{worker}", "k": 5})
            assert found.status_code == 200, found.text
            assert found.json()["blocks"], found.text
            answered.add(worker)
    assert proc.poll() is None
