"""Faults over the embedded path, as an operator meets them: a real ``smartblock serve`` (its supervisor, its
stream consumer process, uvicorn) over its embedded Redis on a unix socket, with signals sent by the test.

- SIGKILL of the stream consumer: /readyz says so, the supervisor starts it again, clicks posted meanwhile
  are applied after.
- SIGSTOP, then SIGKILL of Redis under traffic: /search never answers 5xx, its p99 stays within the
  request deadline (plus a margin), the supervisor restarts Redis on the same socket, clicks acknowledged
  more than a second before the kill survive (AOF), and after the restart events are applied again, even
  when the consumer group is gone (the consumer creates it again).

The Redis here is the test's own (``embedded_redis``): never the shared server on 127.0.0.1:6379.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import psutil
import pytest
import redis
import yaml

from features.embedded import server_pid, socket_path
from search.settings import Settings
from serving.config import ServingSettings

from .helpers import QUERIES, Answer, Traffic

DEADLINE_MS = 50.0
MARGIN_S = 0.06  # the serve process, the test's two clients and the consumer share two busy cores


@dataclass
class Served:
    proc: subprocess.Popen
    url: str
    folder: Path  # the embedded Redis's folder
    log: Path

    def consumer_pids(self) -> list[int]:
        pids = []
        for kid in psutil.Process(self.proc.pid).children(recursive=True):
            try:
                cmd = kid.cmdline()
            except psutil.Error:  # gone, or a zombie the supervisor has not reaped yet: not a live consumer
                continue
            if "stream" in cmd and "features" in cmd:
                pids.append(kid.pid)
        return pids

    def redis(self) -> redis.Redis:
        return redis.Redis(unix_socket_path=str(socket_path(self.folder)), socket_timeout=5)


@contextlib.contextmanager
def _serve(
    tmp_path_factory: pytest.TempPathFactory,
    tiny_world: Path,
    base_settings: Settings,
    port: int,
    log_level: str = "warning",
) -> Iterator[Served]:
    """``smartblock serve`` on the tiny world over an embedded Redis of its own, ready; stopped after."""
    from data.layout import DataLayout
    from features.build import build_online_features
    from features.embedded import ensure_server
    from features.store import RedisFeatureStore

    base = tmp_path_factory.mktemp("serve")  # its own config and log: two servers may run at once
    folder = base / "redis"
    folder.mkdir()
    features = base_settings.features.model_copy(
        update={"redis_url": None, "embedded_dir": folder, "namespace": f"flt{uuid.uuid4().hex[:6]}"}
    )
    ensure_server(folder)
    build_online_features(DataLayout(tiny_world), RedisFeatureStore.connect(features))
    serving = ServingSettings(
        redis_deadline_ms=DEADLINE_MS,
        breaker_cooldown_s=0.5,
        consumer_stale_s=1.0,
        restart_backoff_s=1.5,  # so the test sees the consumer dead before its restart
        model_poll_s=60,
    )
    settings = base_settings.model_copy(update={"features": features, "serving": serving})
    config = base / "faults.yaml"
    config.write_text(yaml.safe_dump(settings.model_dump(mode="json", exclude={"serving": {"api_key"}})))
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL" and not k.startswith("SMARTBLOCK_")}
    log = base / "serve.log"
    cmd = [sys.executable, "-m", "search.cli", "--config", str(config), "serve", "--world", str(tiny_world)]
    cmd += ["--port", str(port), "--log-level", log_level]
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT)
    s = Served(proc, f"http://127.0.0.1:{port}", folder, log)
    try:
        _until(lambda: _ready(s), 240, lambda: f"serve never became ready:\n{log.read_text()[-3000:]}")
        yield s
    finally:
        for pid in s.consumer_pids() if proc.poll() is None else []:
            os.kill(pid, signal.SIGTERM)
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
        pid = server_pid(folder)
        if pid is not None:  # the server the test or its serve process started
            os.kill(pid, signal.SIGCONT)
            os.kill(pid, signal.SIGTERM)


@pytest.fixture(scope="module")
def served(
    tmp_path_factory: pytest.TempPathFactory,
    tiny_world: Path,
    base_settings: Settings,
    parts: object,  # the session's indexes are built
    trained_versions: list[str],
    free_port: Callable[[], int],
) -> Iterator[Served]:
    with _serve(tmp_path_factory, tiny_world, base_settings, free_port()) as s:
        yield s


def _ready(s: Served) -> bool:
    if s.proc.poll() is not None:
        raise AssertionError(f"serve exited {s.proc.returncode}:\n{s.log.read_text()[-3000:]}")
    try:
        return httpx.get(f"{s.url}/readyz", timeout=5).status_code == 200
    except httpx.HTTPError:
        return False


def _until(done: Callable[[], bool], timeout: float, why: Callable[[], str] | str = "timed out") -> None:
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() > deadline:
            raise AssertionError(why() if callable(why) else why)
        time.sleep(0.1)


def _click(client: httpx.Client, user: str) -> Callable[[], bool]:
    """Post a click on the last block of a fresh search; return a check that it reached the features."""
    click, applied = _clickable(client, user)
    res = client.post("/events", json={"events": [click]})
    assert res.status_code == 202 and res.json()["accepted"] == 1, res.text
    return applied


def _clickable(client: httpx.Client, user: str) -> tuple[dict, Callable[[], bool]]:
    """A click on the last block of a fresh search, and a check that it reached the features."""
    first = client.post("/search", json={"query": QUERIES[0], "user_id": user, "k": 10, "explain": True})
    page = first.json()
    target = page["blocks"][-1]
    before = target["features"]["qb_clicks_log"]
    click = {
        "request_id": page["request_id"],
        "user_id": user,
        "block_id": target["block_id"],
        "position": len(page["blocks"]),
        "type": "click",
    }

    def applied() -> bool:
        again = client.post("/search", json={"query": QUERIES[0], "user_id": user, "k": 50, "explain": True})
        if again.status_code != 200 or again.json()["degraded"]:
            return False
        now = {b["block_id"]: b["features"]["qb_clicks_log"] for b in again.json()["blocks"]}
        return now.get(target["block_id"], before) > before

    applied.request_id = page["request_id"]  # type: ignore[attr-defined]
    return click, applied


@pytest.mark.slow
def test_events_refused_while_redis_is_frozen_say_when_to_resend_and_the_client_does(served: Served) -> None:
    from search.experiments.traffic import post_events

    pid = server_pid(served.folder)
    assert pid is not None
    thawed: list[float] = []

    def thaw_after_the_first_refusal(response: httpx.Response) -> None:
        # Redis comes back once the client has been refused, and before the Retry-After it was told.
        if armed and response.status_code == 503 and not thawed:
            os.kill(pid, signal.SIGCONT)
            thawed.append(time.monotonic())

    armed = False
    hooks = {"response": [thaw_after_the_first_refusal]}
    with httpx.Client(base_url=served.url, timeout=10, event_hooks=hooks) as client:
        click, applied = _clickable(client, f"ra{uuid.uuid4().hex[:6]}")
        click["event_id"] = f"{click['request_id']}:resend"
        os.kill(pid, signal.SIGSTOP)
        try:
            # Within its deadline the write is refused, and the answer says when the breaker may let it in.
            refused = client.post("/events", json={"events": [click]})
            assert refused.status_code == 503 and refused.json()["kind"] == "StoreUnavailable", refused.text
            assert refused.headers["Retry-After"] == "1"  # the fixture's 0.5 s cooldown, in whole seconds
            armed = True
            # The simulator's client sends the batch again after that wait; Redis is back by then.
            answer, retries = post_events(client, [click])
        finally:
            os.kill(pid, signal.SIGCONT)
        assert thawed, "post_events was never refused while Redis was stopped"
        assert answer.status_code == 202 and answer.json()["accepted"] == 1, answer.text
        assert retries >= 1
        _until(applied, 20, "the click sent again after the 503 was never applied")


@pytest.mark.slow
def test_a_killed_consumer_is_restarted_and_readyz_says_so(served: Served) -> None:
    with httpx.Client(base_url=served.url, timeout=10) as client:
        (victim,) = served.consumer_pids()
        os.kill(victim, signal.SIGKILL)
        killed = time.monotonic()
        # Clicks posted while no consumer runs wait in the stream (durable), and /readyz stops saying ready.
        applied = _click(client, f"ck{uuid.uuid4().hex[:6]}")

        def not_ready() -> bool:
            res = client.get("/readyz")
            return res.status_code == 503 and res.json()["consumer"]["alive"] is False

        _until(not_ready, 10, "/readyz never reported the dead consumer")
        _until(lambda: served.consumer_pids() not in ([], [victim]), 15, "the consumer was not restarted")
        _until(lambda: client.get("/readyz").status_code == 200, 30, lambda: client.get("/readyz").text)
        back = time.monotonic() - killed
        body = client.get("/readyz").json()
        assert body["consumer"]["alive"] and body["consumer"]["group"], body
        _until(applied, 20, "the click posted while the consumer was dead was never applied")
    print(f"consumer SIGKILL -> ready again after {back:.1f} s")


def _p99(answers: list[Answer]) -> float:
    took = sorted(a.seconds for a in answers)
    return took[min(len(took) - 1, int(len(took) * 0.99))]


@pytest.mark.slow
def test_redis_frozen_killed_and_restarted_keeps_search_within_the_deadline(served: Served) -> None:
    user = f"dur{uuid.uuid4().hex[:6]}"
    with httpx.Client(base_url=served.url, timeout=30) as client, Traffic(served.url) as traffic:
        t0 = time.monotonic()
        time.sleep(1.5)
        healthy = traffic.between(t0, time.monotonic())

        # A click acknowledged (202) well over a second before the kill: AOF (fsync every second) keeps it.
        survivor = _click(client, user)
        _until(survivor, 20, "the click was never applied")
        time.sleep(1.2)

        pid = server_pid(served.folder)
        assert pid is not None
        os.kill(pid, signal.SIGSTOP)
        frozen = time.monotonic()
        time.sleep(2.5)
        os.kill(pid, signal.SIGCONT)
        thawed = time.monotonic()
        time.sleep(1.0)

        os.kill(pid, signal.SIGKILL)
        killed = time.monotonic()
        restarted_by_supervisor = lambda: server_pid(served.folder) not in (None, pid)  # noqa: E731
        _until(restarted_by_supervisor, 15, "the supervisor did not restart Redis")
        restarted = time.monotonic()
        _until(lambda: _answers_ok(client), 15, "search did not recover after the restart")
        recovered = time.monotonic()
        time.sleep(1.0)
        end = time.monotonic()

    stopped, down = traffic.between(frozen, thawed), traffic.between(killed, recovered)
    around = traffic.between(frozen, end)
    assert len(stopped) >= 5 and len(down) >= 3, (len(stopped), len(down))
    assert all(a.status == 200 for a in traffic.answers), {a.status for a in traffic.answers}
    assert any(a.degraded for a in stopped) and any(a.degraded for a in down)
    bound = _p99(healthy) + DEADLINE_MS / 1000 + MARGIN_S
    report = {
        "healthy_p99_ms": round(_p99(healthy) * 1000, 1),
        "stopped_p99_ms": round(_p99(stopped) * 1000, 1),
        "stopped_max_ms": round(max(a.seconds for a in stopped) * 1000, 1),
        "killed_p99_ms": round(_p99(down) * 1000, 1),
        "killed_max_ms": round(max(a.seconds for a in down) * 1000, 1),
        "all_outage_p99_ms": round(_p99(around) * 1000, 1),
        "restart_s": round(restarted - killed, 2),
        "recovered_s": round(recovered - killed, 2),
        "bound_ms": round(bound * 1000, 1),
    }
    print(report)
    assert _p99(around) <= bound, report

    # The click acknowledged before the kill is still on the stream after the restart (AOF), and so is the
    # consumer group.
    r = served.redis()
    stream = next(k for k in r.scan_iter(match="*:events") if not k.endswith(b":dead"))
    entries = r.xrange(stream)
    assert any(survivor.request_id.encode() in fields[b"data"] for _, fields in entries)  # type: ignore[attr-defined]
    assert any(g["name"] == b"features" for g in r.xinfo_groups(stream))

    with httpx.Client(base_url=served.url, timeout=30) as client:
        # Events are applied again after the restart, even when Redis came back without the group.
        _until(_click(client, f"{user}b"), 30, "no click applied after the restart")
        r.xgroup_destroy(stream, "features")
        _until(_click(client, f"{user}c"), 30, "no click applied once the group was gone (NOGROUP)")
        _until(lambda: client.get("/readyz").status_code == 200, 15, lambda: client.get("/readyz").text)


def _answers_ok(client: httpx.Client) -> bool:
    res = client.get("/search", params={"q": QUERIES[1], "user_id": "probe"})
    return res.status_code == 200 and not res.json()["degraded"]


def test_sigterm_under_traffic_shuts_the_server_down_gracefully(
    tmp_path_factory: pytest.TempPathFactory,
    tiny_world: Path,
    base_settings: Settings,
    parts: object,
    trained_versions: list[str],
    free_port: Callable[[], int],
) -> None:
    # The JVM (SPLADE's Lucene) used to take SIGTERM for itself: the server skipped its graceful shutdown,
    # and one stopped while a request was in a Java call hung for good, listening, every request timing out.
    with _serve(tmp_path_factory, tiny_world, base_settings, free_port(), log_level="info") as s:
        outcomes: list[str] = []
        stop = threading.Event()

        def search(n: int) -> None:
            with httpx.Client(base_url=s.url, timeout=10) as client:
                i = n
                while not stop.is_set():
                    try:
                        res = client.get(
                            "/search", params={"q": f"{QUERIES[i % len(QUERIES)]} {i}", "user_id": "u1"}
                        )
                        outcomes.append(str(res.status_code))
                    except httpx.TimeoutException:
                        outcomes.append("timeout")
                    except httpx.HTTPError:
                        outcomes.append("refused")  # the server has gone: what a stopped server answers
                        time.sleep(0.05)
                    i += 2

        clients = [threading.Thread(target=search, args=(n,)) for n in range(2)]
        for t in clients:
            t.start()
        _until(lambda: outcomes.count("200") >= 20, 60, "no searches answered")
        s.proc.send_signal(signal.SIGTERM)
        try:
            s.proc.wait(timeout=30)
        finally:
            stop.set()
            for t in clients:
                t.join()
        log = s.log.read_text()
        assert "Shutting down" in log and "Finished server process" in log, log[-3000:]
        assert "timeout" not in outcomes and set(outcomes) <= {"200", "refused"}, outcomes[-20:]
