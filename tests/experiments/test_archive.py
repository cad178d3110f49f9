"""``smartblock events export`` against a real Redis stream: the tiny world's events published with the
server's FeatureStore.publish, archived as Parquet, read back; re-runs, crashes before the ack and malformed
entries must neither lose nor duplicate anything.

The Redis is the server on 127.0.0.1:6379 when it answers, else the embedded one (as in tests/features);
every test has its own key namespace and deletes it afterwards.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from data.contracts import Interaction, SearchImpression
from data.io import iter_records
from data.layout import DataLayout
from features.archive import GROUP, StreamArchiver, read_archive
from features.store import RedisFeatureStore
from search.experiments.analysis import analyze
from serving.experiments.config import parse_config


@pytest.fixture(scope="module")
def world_events(tiny_world: Path) -> dict[date, list[SearchImpression | Interaction]]:
    """The tiny world's events per day, in time order (as a server would publish them)."""
    layout = DataLayout(tiny_world)
    out: dict[date, list] = {}
    for day in layout.days("impressions"):
        records: list = []
        for kind, contract in (("impressions", SearchImpression), ("interactions", Interaction)):
            for path in layout.day_files(kind, day):
                records.extend(iter_records(path, contract))
        out[day] = sorted(records, key=lambda r: r.ts)
    return out


def _archiver(store: RedisFeatureStore, out: Path, **kwargs: object) -> StreamArchiver:
    return StreamArchiver(store.client, store.keys.events_stream, out, **kwargs)  # type: ignore[arg-type]


def _counts(records: list) -> tuple[int, int]:
    imps = sum(isinstance(r, SearchImpression) for r in records)
    return imps, len(records) - imps


def test_round_trip_and_rerun(store: RedisFeatureStore, world_events: dict, tmp_path: Path) -> None:
    days = sorted(world_events)
    first = [r for d in days[:2] for r in world_events[d]]
    store.publish(first)
    stats = _archiver(store, tmp_path, batch=500).run(flush_rows=2000)
    n_imps, n_acts = _counts(first)
    assert (stats.impressions, stats.interactions, stats.rejected) == (n_imps, n_acts, 0)
    assert stats.acked == len(first) and stats.files >= 4  # several flushes, two kinds, two days
    imps, acts = read_archive(tmp_path)
    assert (imps.num_rows, acts.num_rows) == (n_imps, n_acts)
    # Day partitions by the event's own time, and the records come back equal.
    layout = DataLayout(tmp_path)
    assert layout.days("impressions") == days[:2]
    original = {r.request_id: r for r in first if isinstance(r, SearchImpression)}
    for row in imps.slice(0, 50).to_pylist():
        assert SearchImpression.model_validate(row) == original[row["request_id"]]

    # Nothing new: a second export writes nothing and the files on disk are untouched.
    before = sorted(p.name for p in tmp_path.rglob("*.parquet"))
    again = _archiver(store, tmp_path).run()
    assert (again.impressions, again.interactions, again.files) == (0, 0, 0)
    assert sorted(p.name for p in tmp_path.rglob("*.parquet")) == before

    # New events: only they are archived, into new part files.
    rest = [r for d in days[2:] for r in world_events[d]]
    store.publish(rest)
    more = _archiver(store, tmp_path).run()
    assert (more.impressions, more.interactions) == _counts(rest)
    imps, acts = read_archive(tmp_path)
    assert (imps.num_rows, acts.num_rows) == _counts(first + rest)
    raw = layout.read_events("impressions", validate_rows=False)
    assert raw.num_rows == imps.num_rows  # no duplicates were even written

    # The archive is what analyze reads: the world's pages are all in experiment "default".
    config = parse_config(
        "layers: [{name: l, salt: s, experiments: "
        "[{name: default, traffic: 100, variants: [{name: logging, weight: 100}]}]}]"
    )
    report = analyze(config, tmp_path)["experiments"][0]
    assert report["impressions"] == imps.num_rows and report["variants"][0]["metrics"]["ctr"]["value"] > 0.1


def test_crash_before_ack_redelivers_without_duplicates(
    store: RedisFeatureStore, world_events: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    records = world_events[sorted(world_events)[0]]
    store.publish(records)
    crashing = _archiver(store, tmp_path, consumer="host-a")

    def crash(*args: object) -> int:
        raise ConnectionError("killed between writing the files and acknowledging them")

    monkeypatch.setattr(crashing.client, "xack", crash)
    with pytest.raises(ConnectionError):
        crashing.run()
    monkeypatch.undo()
    written = sorted(p.name for p in tmp_path.rglob("*.parquet"))
    assert written  # the files are complete on disk, the entries still pending
    assert store.client.xpending(store.keys.events_stream, GROUP)["pending"] == len(records)

    # The same consumer restarts: it re-reads its own pending entries, finds their files, acknowledges.
    stats = _archiver(store, tmp_path, consumer="host-a").run()
    assert stats.skipped_files == len(written) and stats.files == 0 and stats.acked == len(records)
    assert sorted(p.name for p in tmp_path.rglob("*.parquet")) == written
    assert store.client.xpending(store.keys.events_stream, GROUP)["pending"] == 0
    imps, acts = read_archive(tmp_path)
    assert (imps.num_rows, acts.num_rows) == _counts(records)


def test_a_dead_consumers_entries_are_reclaimed(
    store: RedisFeatureStore, world_events: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    records = world_events[sorted(world_events)[1]][:300]
    store.publish(records)
    dead = _archiver(store, tmp_path / "a", consumer="host-dead")
    monkeypatch.setattr(dead.client, "xack", lambda *a: (_ for _ in ()).throw(ConnectionError("gone")))
    with pytest.raises(ConnectionError):
        dead.run()
    monkeypatch.undo()
    other = _archiver(store, tmp_path / "a", consumer="host-b", claim_idle_ms=1).run()
    assert other.reclaimed == len(records) and other.acked == len(records)
    imps, acts = read_archive(tmp_path / "a")
    assert (imps.num_rows, acts.num_rows) == _counts(records)


def test_malformed_entries_are_set_aside_and_acknowledged(
    store: RedisFeatureStore, world_events: dict, tmp_path: Path
) -> None:
    good = world_events[sorted(world_events)[0]][:20]
    store.publish(good)
    stream = store.keys.events_stream
    store.client.xadd(stream, {"kind": "impression", "data": '{"request_id": ""}'})
    store.client.xadd(stream, {"kind": "telemetry", "data": "{}"})
    stats = _archiver(store, tmp_path).run()
    assert stats.rejected == 2 and stats.impressions + stats.interactions == 20
    assert store.client.xpending(stream, GROUP)["pending"] == 0
    rejected = [json.loads(line) for p in (tmp_path / "rejected").glob("*.jsonl") for line in p.open()]
    assert len(rejected) == 2 and all(r["reason"] for r in rejected)


def test_follow_mode_flushes_on_time(store: RedisFeatureStore, world_events: dict, tmp_path: Path) -> None:
    records = world_events[sorted(world_events)[0]][:100]
    store.publish(records)
    flushes: list[int] = []
    stats = _archiver(store, tmp_path).run(
        follow=True,
        flush_seconds=0.2,
        block_ms=100,
        max_seconds=1.0,
        on_flush=lambda s: flushes.append(s.acked),
    )
    assert stats.acked == 100 and flushes and flushes[0] == 100


def test_cli_export(
    store: RedisFeatureStore, world_events: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from search.cli import analysis, experiments

    records = world_events[sorted(world_events)[0]][:50]
    store.publish(records)
    settings = store.settings
    monkeypatch.setenv("SMARTBLOCK_FEATURES__NAMESPACE", settings.namespace)
    if settings.redis_url:
        monkeypatch.setenv("SMARTBLOCK_FEATURES__REDIS_URL", settings.redis_url)
    else:
        monkeypatch.setenv("SMARTBLOCK_FEATURES__EMBEDDED_DIR", str(settings.embedded_dir))
    root = typer.Typer()
    experiments.register(root)
    analysis.register(root)
    result = CliRunner().invoke(root, ["events", "export", "--out", str(tmp_path), "--json"])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert payload["impressions"] + payload["interactions"] == 50 and payload["group"] == GROUP


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_following_export_stops_cleanly_on_a_signal(
    store: RedisFeatureStore,
    store_env: dict[str, str],
    world_events: dict,
    tmp_path: Path,
    sig: signal.Signals,
) -> None:
    """Ctrl-C or a service manager's SIGTERM: the exporter writes what it read and exits 0, losing nothing."""
    records = world_events[sorted(world_events)[0]][:60]
    out = tmp_path / "events"
    cmd = [sys.executable, "-m", "search.cli", "events", "export", "--out", str(out), "--follow", "--json"]
    proc = subprocess.Popen(cmd, env=store_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        store.publish(records)
        deadline = time.monotonic() + 60
        # Until the exporter holds them unacknowledged (it flushes after 10 s): the signal lands mid-batch.
        while time.monotonic() < deadline:
            if store.client.exists(store.keys.events_stream) and any(
                g["name"].decode() == GROUP and g["pending"] == len(records)
                for g in store.client.xinfo_groups(store.keys.events_stream)
            ):
                break
            time.sleep(0.1)
        proc.send_signal(sig)
        stdout, stderr = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 0, stderr
    assert json.loads(stdout)["impressions"] + json.loads(stdout)["interactions"] == len(records)
    assert store.client.xpending(store.keys.events_stream, GROUP)["pending"] == 0


def test_entries_trimmed_while_pending_are_acknowledged(
    store: RedisFeatureStore, world_events: dict, tmp_path: Path
) -> None:
    """The stream's cap removed entries a dead exporter held: nothing to write, and they must not stay
    pending for ever (they used to, and stopped the reading of the exporter's own pending entries)."""
    records = world_events[sorted(world_events)[0]][:20]
    store.publish(records)
    stream = store.keys.events_stream
    archiver = _archiver(store, tmp_path)
    archiver.ensure_group()
    store.client.xreadgroup(GROUP, archiver.consumer, {stream: ">"}, count=100)  # pending, then "crash"
    store.client.xtrim(stream, maxlen=0)
    stats = _archiver(store, tmp_path).run()
    # Redis 7's XAUTOCLAIM drops them from the pending list itself and names them; on 6.2 the exporter's own
    # read finds them without fields and acknowledges them. Counted either way.
    assert stats.trimmed == 20 and stats.impressions + stats.interactions == 0
    assert store.client.xpending(stream, GROUP)["pending"] == 0


def test_entries_the_streams_cap_trims_before_they_are_archived_are_counted(
    store: RedisFeatureStore, world_events: dict, tmp_path: Path
) -> None:
    # Delivered to an export that died, then trimmed by the stream's cap before another export claims them:
    # Redis 7's XAUTOCLAIM drops them and names them; 6.2's hands them over as nils, which the claimer's own
    # read then finds without fields. Counted either way, once.
    records = [r for day in sorted(world_events) for r in world_events[day]][:8]
    store.publish(records)
    stream = store.keys.events_stream
    archiver = _archiver(store, tmp_path / "archive", consumer="next", claim_idle_ms=1)
    archiver.ensure_group()
    got = store.client.xreadgroup(GROUP, "died", {stream: ">"}, count=5)
    assert sum(len(items) for _, items in got) == 5
    assert store.client.xtrim(stream, maxlen=3, approximate=False) == 5
    time.sleep(0.05)
    stats = archiver.run()
    assert stats.trimmed == 5
    assert stats.impressions + stats.interactions + stats.served == 3 and stats.acked == 3
    assert store.client.xpending(stream, GROUP)["pending"] == 0
