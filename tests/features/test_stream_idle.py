"""An idle stream does not kill the consumer: its blocking read stays under the client's socket timeout
(``smartblock serve`` runs ``features stream`` with the default 1 s block and a 0.25 s socket timeout)."""

from __future__ import annotations

from features.connection import connect
from features.store import RedisFeatureStore
from features.stream import StreamConsumer


def test_an_idle_consumer_outlives_its_socket_timeout(store: RedisFeatureStore) -> None:
    settings = store.settings.model_copy(update={"socket_timeout_s": 0.5})
    client = connect(settings)
    timeout_s = client.connection_pool.connection_kwargs["socket_timeout"]
    consumer = StreamConsumer(RedisFeatureStore(client, settings), settings, consumer="idle")
    # Blocking reads of 1 s on a client timing out sooner raised redis TimeoutError before the fix.
    stats = consumer.run(block_ms=int(timeout_s * 1000) + 800, max_seconds=timeout_s * 3)
    assert stats.applied == 0 and stats.dead == 0 and stats.retries == 0


def test_an_idle_consumer_stays_live_in_the_group_status(store: RedisFeatureStore) -> None:
    # /readyz counts a consumer live when XINFO CONSUMERS saw it within the staleness limit. On Redis 7.0 a
    # blocking read that times out leaves that idle time growing: an idle step must also touch the group.
    import threading

    from features.stream import GROUP, group_status

    consumer = StreamConsumer(store, store.settings, consumer="quiet")
    stop = threading.Event()
    runner = threading.Thread(target=consumer.run, kwargs={"block_ms": 500, "stop": stop}, daemon=True)
    runner.start()
    try:
        seen = []
        for _ in range(6):
            stop.wait(0.5)
            status = group_status(store.client, store.keys.events_stream, GROUP, stale_ms=1_200)
            seen.append((status.live, status.idle_ms))
        assert all(live == 1 for live, _ in seen[1:]), seen  # three seconds of blocking reads, still live
    finally:
        stop.set()
        runner.join(5)
