"""An event whose apply fails in Redis writes nothing on that hash tag and goes to the dead letters with its
reason and payload; a Redis that refuses commands (out of memory, demoted to a replica, busy with a script)
stops nobody and loses nothing.

Redis does not undo a script's writes when the script fails midway, and the apply script marks an event as
applied on a tag before it writes: these tests put a key of the wrong type, and a damaged stored counter, in
an event's way, and fill the server's memory, for real."""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from data.contracts import Interaction, SearchImpression
from features import dead_letters
from features.config import FeatureStoreSettings
from features.ops import OpBuilder
from features.store import ApplyError, RedisFeatureStore
from features.stream import StreamConsumer, refused_by_server, to_event

from .helpers import assert_same_state, first_impressions, replayed, world_records


def _dead_letters(store: RedisFeatureStore) -> list[dict[str, str]]:
    return [
        {k.decode(): v.decode() for k, v in fields.items()}
        for _, fields in store.client.xrange(store.keys.dead_letters)
    ]


def test_a_key_of_another_type_stops_the_events_on_its_tag_and_no_other(
    tiny_world: Path, store: RedisFeatureStore
) -> None:
    records = first_impressions(tiny_world, 8)
    victim = records[0].user_id
    user_key = store.keys.user(victim)
    store.client.set(user_key, "overwritten by someone else")
    store.publish(records)

    consumer = StreamConsumer(store, store.settings, consumer="wrongtype")
    stats = consumer.run(until_idle=True)  # before: WRONGTYPE raised out of run(), and the consumer died

    hit = [r for r in records if r.user_id == victim]
    assert stats.dead == len(hit) and stats.acked == len(records) - len(hit)
    letters = _dead_letters(store)
    assert len(letters) == len(hit)
    for letter, rec in zip(letters, hit, strict=True):
        assert user_key in letter["reason"] and "string" in letter["reason"], letter["reason"]
        assert json.loads(letter["fields"])["data"] == rec.model_dump_json()  # the event, to publish again
        # The failed tag holds no marker: published again after the key is mended, the event applies there.
        event = to_event("impression", rec.model_dump_json())
        assert event is not None
        marker = store.keys.applied_marker(store.keys.user_tag(victim), event.event_id)
        assert not store.client.exists(marker)
    assert store.client.get(user_key) == b"overwritten by someone else"
    assert not store.client.xpending(store.keys.events_stream, "features")["pending"]

    # Every other key holds exactly what the replay of all events writes: the victim's other tags applied.
    expected = replayed(store, records)
    expected.hashes.pop(user_key)
    assert_same_state(expected, store)


def test_a_damaged_counter_stops_its_events_before_they_write_and_they_apply_once_mended(
    tiny_world: Path, store: RedisFeatureStore
) -> None:
    records, _, _ = world_records(tiny_world, days=1)
    at = next(i for i, r in enumerate(records) if isinstance(r, Interaction))
    click = records[at]
    search = next(
        r for r in records[:at] if isinstance(r, SearchImpression) and r.request_id == click.request_id
    )
    records = records[: at + 1]
    query_key = store.keys.query_blocks(search.query)
    # The clicked block's counter on the query's hash: the search and the click both add to it, after
    # counters the old script (marker first, writes as it went) had written already when it got there.
    store.client.hset(query_key, click.block_id, b"bad")
    store.publish(records)

    stats = StreamConsumer(store, store.settings, consumer="damaged").run(until_idle=True)

    assert stats.dead >= 2 and stats.dead + stats.acked == len(records)
    assert all("BADEVENT" in letter["reason"] for letter in _dead_letters(store))
    assert store.client.hgetall(query_key) == {click.block_id.encode(): b"bad"}  # nothing else written

    # Mended, and sent back: the click's request context noted it when its other tags applied, so it is
    # the ops kept in its letter that apply, skips of the blocks above it included; each tag once.
    store.client.hdel(query_key, click.block_id)
    assert dead_letters.requeue(store, "not applied") == stats.dead
    assert not _dead_letters(store)
    assert_same_state(replayed(store, records), store)


def _closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def _refusing(client: redis.Redis, refusal: str, socket_path: str) -> Iterator[None]:
    """The server refuses the consumer's commands while inside, for a state of its own, caused for real:
    - ``oom``: no memory left for any write (``maxmemory 1``);
    - ``readonly``: demoted to a replica (of a primary it cannot reach, so it keeps its data), as a
      failover leaves an old primary that a consumer still points at;
    - ``busy``: a script runs past ``lua-time-limit`` on another connection, until ``SCRIPT KILL``.
    """
    if refusal == "oom":
        client.config_set("maxmemory", 1)
        try:
            yield
        finally:
            client.config_set("maxmemory", 0)
    elif refusal == "readonly":
        client.execute_command("REPLICAOF", "127.0.0.1", _closed_port())
        try:
            yield
        finally:
            client.execute_command("REPLICAOF", "NO", "ONE")
    else:
        client.config_set("lua-time-limit", 10)
        looping = redis.Redis(unix_socket_path=socket_path)
        runner = threading.Thread(
            target=_quietly, args=(lambda: looping.eval("while true do end", 0),), daemon=True
        )
        runner.start()
        time.sleep(0.2)  # past the 10 ms: every other command is answered BUSY
        try:
            yield
        finally:
            redis.Redis(unix_socket_path=socket_path).script_kill()
            runner.join(timeout=5)
            looping.close()


def _quietly(call: Callable[[], object]) -> None:
    with contextlib.suppress(redis.ResponseError):  # the killed script's own error
        call()


@pytest.mark.parametrize("refusal", ["oom", "readonly", "busy"])
def test_a_redis_that_refuses_holds_the_events_until_it_accepts_them(
    tiny_world: Path, embedded_redis: Path, refusal: str
) -> None:
    settings = FeatureStoreSettings(embedded_dir=embedded_redis, namespace=refusal, socket_timeout_s=5.0)
    store = RedisFeatureStore.connect(settings)
    records = first_impressions(tiny_world, 8)
    store.publish(records)
    consumer = StreamConsumer(store, settings, consumer=refusal)
    consumer.ensure_group()  # the group stands; its reads and the applies meet the refusal
    stop = threading.Event()
    failure: list[BaseException] = []

    def consume() -> None:
        try:
            consumer.run(block_ms=100, stop=stop)
        except BaseException as exc:  # before: OOM raised out of run(), and the consumer died
            failure.append(exc)

    socket_path = store.client.connection_pool.connection_kwargs["path"]
    with _refusing(store.client, refusal, socket_path):
        thread = threading.Thread(target=consume, daemon=True)
        thread.start()
        deadline = time.monotonic() + 10
        while consumer.stats.retries < 3 and not failure and time.monotonic() < deadline:
            time.sleep(0.05)
        try:
            assert not failure, failure
            assert consumer.stats.retries >= 3 and consumer.stats.applied == 0 and consumer.stats.dead == 0
            if refusal != "busy":  # a busy server answers this test's reads BUSY too
                assert not store.client.keys(f"{settings.namespace}:*:seen:*")  # not even a marker
        except BaseException:
            stop.set()
            raise
    try:
        deadline = time.monotonic() + 10
        while consumer.stats.acked < len(records) and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        stop.set()
        thread.join(timeout=5)
    assert not failure, failure
    assert consumer.stats.acked == len(records) and consumer.stats.dead == 0
    assert_same_state(replayed(store, records), store)


def test_the_apply_script_out_of_memory_writes_nothing(tiny_world: Path, embedded_redis: Path) -> None:
    """Redis checks memory at a script's first write only: the first marker is refused, and nothing else
    is written after it (which would not be checked)."""
    settings = FeatureStoreSettings(embedded_dir=embedded_redis, namespace="oom2", socket_timeout_s=5.0)
    store = RedisFeatureStore.connect(settings)
    batch = []
    for rec in first_impressions(tiny_world, 4):
        event = to_event("impression", rec.model_dump_json())
        assert event is not None
        batch.append((event.event_id, OpBuilder(store.keys, settings).impression(event)))
    before = store.client.dbsize()
    store.client.config_set("maxmemory", 1)
    try:
        # Redis 7 answers OOM; 6.2 wraps it in the script's error. The consumer waits either out.
        with pytest.raises(redis.ResponseError) as refused:
            store.apply(batch)
        assert refused_by_server(refused.value), refused.value
    finally:
        store.client.config_set("maxmemory", 0)
    assert store.client.dbsize() == before
    assert store.apply(batch) > len(batch)  # with room, every tag of every event


def test_the_apply_script_validates_before_it_marks(store: RedisFeatureStore) -> None:
    """An op the script cannot carry out (an unknown code) is refused: nothing written, marker included."""
    key = store.keys.user("u-bad-op")
    ops = [("s", key, "a", "1"), ("?", key, "b", "2"), ("x", key, 3600, 0.0)]
    with pytest.raises(ApplyError, match="BADEVENT unknown op"):
        store.apply([("bad-op", ops)])
    assert not store.client.exists(key)
    assert not store.client.exists(store.keys.applied_marker(store.keys.user_tag("u-bad-op"), "bad-op"))


def test_one_call_applies_the_events_around_one_it_refuses_in_their_order(store: RedisFeatureStore) -> None:
    """Events on one hash tag go to Redis in one script call; one refused in the middle stops only itself."""
    key = store.keys.user("u-three")
    batch = [
        ("e1", [("s", key, "a", "1"), ("x", key, 3600, 0.0)]),
        ("e2", [("s", key, "b", "2"), ("?", key, "c", "3")]),
        ("e3", [("s", key, "a", "4"), ("s", key, "d", "5")]),
    ]
    with pytest.raises(ApplyError) as caught:
        store.apply(batch)
    assert caught.value.applied == 2 and list(caught.value.failed) == ["e2"]
    assert store.client.hgetall(key) == {b"a": b"4", b"d": b"5"}  # e1, then e3 over it; nothing of e2
    assert store.client.ttl(key) > 0
    tag = store.keys.user_tag("u-three")
    seen = [store.client.exists(store.keys.applied_marker(tag, e)) for e in ("e1", "e2", "e3")]
    assert seen == [1, 0, 1]
    with pytest.raises(ApplyError) as again:  # redelivered: e1 and e3 count once, e2 is refused again
        store.apply(batch)
    assert again.value.applied == 0 and list(again.value.failed) == ["e2"]
