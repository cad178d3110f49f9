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
