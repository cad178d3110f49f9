"""``features rebuild``: the online state restored from the logs plus the archive of live events
(``events export``) equals the state built from the same events all logged: an online store rebuilt from
the offline record, as after losing Redis beyond what its AOF kept."""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path

from data.contracts import Interaction, SearchImpression
from data.io import iter_records
from data.layout import DataLayout
from features.archive import StreamArchiver
from features.build import build_online_features
from features.store import RedisFeatureStore


def _hashes(store: RedisFeatureStore) -> dict[str, dict[bytes, bytes]]:
    """Every hash of the store's namespace, by key without the namespace prefix."""
    out = {}
    for key in store.client.scan_iter(match=f"{store.keys.prefix}:*", count=1000):
        if store.client.type(key) == b"hash":
            out[key.decode()[len(store.keys.prefix) :]] = store.client.hgetall(key)
    return out


def test_rebuild_from_logs_plus_archive_equals_a_build_from_all_logs(
    tiny_world: Path, store: RedisFeatureStore, tmp_path: Path
) -> None:
    layout = DataLayout(tiny_world)
    days = layout.days("impressions")
    # The logs up to day 2; the later days happened live: published to the stream, archived by the exporter.
    logged = tmp_path / "logged"
    logged.mkdir()
    for name in ("world.json", "docs.parquet", "blocks.parquet"):
        shutil.copy(tiny_world / name, logged / name)
    live = []
    for kind, contract in (("impressions", SearchImpression), ("interactions", Interaction)):
        for day in layout.days(kind):
            if day <= days[1]:
                shutil.copytree(layout.day_dir(kind, day), DataLayout(logged).day_dir(kind, day))
            else:
                for path in layout.day_files(kind, day):
                    live += list(iter_records(path, contract))
    live.sort(key=lambda r: (r.ts, 0 if isinstance(r, SearchImpression) else 1))
    store.publish(live)
    archive = tmp_path / "archive"
    StreamArchiver(store.client, store.keys.events_stream, archive).run()
    StreamArchiver(store.client, store.keys.events_stream, archive).run()  # a second export adds nothing

    build_online_features(DataLayout(logged), store, archives=[archive, archive])  # listed twice: once
    rebuilt = _hashes(store)
    other = RedisFeatureStore(store.client, store.settings.model_copy(update={"namespace": uuid.uuid4().hex}))
    try:
        build_online_features(layout, other)
        assert rebuilt == _hashes(other)
    finally:
        other.clear()
