"""A sink from the server's event stream into the data layout: ``smartblock events export``.

The server publishes every impression and interaction to a Redis Stream (``FeatureStore.publish``:
fields ``kind`` = "impression" | "interaction" | "served" and ``data`` = the record as JSON; "served" is
the feature rows a request was ranked on, ``data.contracts.ServedFeatures``). This module reads that
stream with a consumer group of its own ("archive", independent of the features consumer) and writes the
records as Parquet in the ``events/`` layout of ``data.layout.DataLayout``, partitioned by the day of each
event's own timestamp (UTC), so ``smartblock experiment analyze`` and every offline job read them unchanged.

Delivery is at least once: entries are acknowledged only after the files holding them are on disk, so a
crash between the two re-delivers them to the same consumer (it re-reads its own pending entries first) and
entries a dead consumer left pending are reclaimed after ``claim_idle_ms``. Files are never rewritten: each
flush writes new part files, named by a digest of the stream entry ids they hold and renamed into place
only once complete, so a re-delivered batch whose file already exists is acknowledged without writing a
second copy. A re-delivery can still regroup entries differently (after a crash mid-way through a multi-day
flush), so readers deduplicate: impressions by ``request_id``, interactions by
``(request_id, block_id, type, ts)`` (``read_archive`` does), served feature rows by
``(request_id, block_id)`` (``features.served_dataset`` does).

An entry that does not parse or validate is acknowledged and kept, with its reason, in
``rejected/part-*.jsonl`` beside ``events/``: it can never be archived, and leaving it pending would stall
the group. Only a few Redis calls are used (XGROUP CREATE, XAUTOCLAIM, XREADGROUP, XACK), on a plain client.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import redis
from pydantic import ValidationError

from data.contracts import Interaction, Record, SearchImpression, ServedFeatures
from data.io import write_records
from data.layout import EVENT_CONTRACTS, DataLayout, EventKind
from data.schemas import arrow_schema
from features import losses
from features.losses import Entry, ack_trimmed, claimed_entries, take_gap
from features.store import IMPRESSION, INTERACTION, SERVED
from features.stream import TRANSIENT, default_consumer_name, ensure_group, read_entries, waits_out

GROUP = "archive"
KINDS: dict[str, tuple[EventKind, type[Record]]] = {
    IMPRESSION: ("impressions", SearchImpression),
    INTERACTION: ("interactions", Interaction),
    SERVED: ("served", ServedFeatures),
}
INTERACTION_KEY = ["request_id", "block_id", "type", "ts"]


@dataclass
class ExportStats:
    impressions: int = 0
    interactions: int = 0
    served: int = 0  # served-feature records (one per logged request)
    rejected: int = 0
    files: int = 0
    skipped_files: int = 0  # already on disk from an earlier delivery of the same entries
    trimmed: int = 0  # entries the stream's cap removed before they were archived (lost)
    gaps: int = 0  # times the cap had trimmed past what the group read
    uncounted: int = 0  # gaps whose entries Redis 6.2 could not count: ``trimmed`` is then a floor
    acked: int = 0
    reclaimed: int = 0
    retries: int = 0  # reads Redis could not take (slow, restarting, failing over): tried again
    days: set[str] = field(default_factory=set)

    def to_json(self) -> dict[str, Any]:
        return {**{k: v for k, v in vars(self).items() if k != "days"}, "days": sorted(self.days)}


@dataclass
class _Buffer:
    ids: list[bytes] = field(default_factory=list)
    seen: set[bytes] = field(default_factory=set)
    records: dict[tuple[EventKind, date], list[tuple[bytes, Record]]] = field(
        default_factory=lambda: defaultdict(list)
    )
    rejected: list[dict[str, str]] = field(default_factory=list)
    since: float = field(default_factory=time.monotonic)

    def __len__(self) -> int:
        return len(self.ids)


class StreamArchiver:
    """Moves entries of one stream into Parquet files under ``out`` (see the module docstring)."""

    def __init__(
        self,
        client: Any,
        stream: str,
        out: Path,
        *,
        group: str = GROUP,
        consumer: str | None = None,
        batch: int = 1000,
        claim_idle_ms: int = 60_000,
    ) -> None:
        self.client, self.stream, self.group = client, stream, group
        self.layout = DataLayout(Path(out))
        self.consumer = consumer or default_consumer_name(GROUP)
        self.batch, self.claim_idle_ms = batch, claim_idle_ms
        self.stats = ExportStats()
        # Own pending entries are read from id "0" until exhausted, once per run (see ``_next``).
        self._own_pending: bytes | str | None = "0"
        self._claim_cursor: str | None = "0-0"  # None: no reclaim scan running (see ``_next``)

    def ensure_group(self) -> None:
        # From the start of the stream: the first export archives everything the stream still holds.
        ensure_group(self.client, self.stream, self.group)

    def run(
        self,
        *,
        follow: bool = False,
        flush_rows: int = 10_000,
        flush_seconds: float = 10.0,
        block_ms: int = 1000,
        max_seconds: float | None = None,
        on_flush: Callable[[ExportStats], None] | None = None,
    ) -> ExportStats:
        """Drain the stream (``follow=False``) or keep archiving until interrupted or ``max_seconds``.

        Following, a flush happens every ``flush_seconds`` or ``flush_rows`` entries, whichever first, so
        files stay few and large enough while the archive lags the stream by seconds only.
        """
        from features.connection import block_ms_within_timeout, mend_cluster_map

        started = time.monotonic()
        buffer = _Buffer()
        block_ms = block_ms_within_timeout(self.client, block_ms)
        stop = threading.Event()
        # Ctrl-C or SIGTERM while following: finish the read in hand, write what was read, then stop. A flag
        # rather than KeyboardInterrupt, which could land inside the Redis client and look like a lost
        # connection to the retry below.
        restore = _stop_on_signals(stop) if follow else {}
        try:
            grouped, mend = False, False
            while not stop.is_set():
                try:
                    if mend:  # as the stream consumer does (StreamConsumer.attempt)
                        mend_cluster_map(self.client, default_node=True)
                        mend = False
                    if not grouped:  # inside the retry: a Redis failing over or full refuses it too
                        self.ensure_group()
                        grouped = True
                    entries = self._next(block_ms if follow else None)
                except (*TRANSIENT, redis.ResponseError) as exc:
                    if not waits_out(exc):
                        raise
                    self.stats.retries += 1
                    grouped, mend = False, True
                    if max_seconds is not None and time.monotonic() - started >= max_seconds:
                        break  # a bounded run ends on time through an outage too
                    time.sleep(0.2)
                    continue
                for entry_id, fields in entries:
                    self._add(buffer, entry_id, fields)
                due = len(buffer) >= flush_rows or (
                    buffer and time.monotonic() - buffer.since >= flush_seconds
                )
                if not entries and not follow:
                    break
                if due:
                    buffer = self._flush(buffer, on_flush)
                if max_seconds is not None and time.monotonic() - started >= max_seconds:
                    break
        finally:
            for sig, handler in restore.items():
                signal.signal(sig, handler)
        self._flush(buffer, on_flush)
        return self.stats

    def _next(self, block_ms: int | None) -> list[tuple[bytes, dict]]:
        """Entries a dead consumer left pending, else our own pending ones (after a restart), else new ones.

        Reclaiming scans the group's pending list once at the start and once after each flush, when nothing
        of ours is buffered: claimed entries are ours from then on, so a rescan would claim them again.
        Own pending entries are read from id "0" once per run, paging on by the last id seen, and again after
        a claim on Redis 6.2 that took trimmed entries (nils), for that read to acknowledge and count them.
        """
        if self._claim_cursor == "0-0":  # a scan begins: first, what the cap trimmed before the group read it
            take_gap(self.stats, self.client, self.stream, self.group)
        if self._claim_cursor is not None:
            reply = self.client.xautoclaim(
                self.stream, self.group, self.consumer, min_idle_time=self.claim_idle_ms,
                start_id=self._claim_cursor, count=self.batch,
            )  # fmt: skip
            cursor = reply[0].decode() if isinstance(reply[0], bytes) else str(reply[0])
            self._claim_cursor = None if cursor == "0-0" else cursor
            claimed, dropped, nils = claimed_entries(reply)
            self._lost(trimmed=dropped)
            if nils:  # Redis 6.2's trimmed entries are this exporter's now: its own read acknowledges them
                self._own_pending = "0"
            self.stats.reclaimed += len(claimed)
            if claimed:
                return claimed
            if self._claim_cursor is not None:
                return self._next(block_ms)
        while self._own_pending is not None:
            own, last = self._read(self._own_pending, None)
            self._own_pending = last
            if own:
                return own
        return self._read(">", block_ms)[0]

    def _lost(self, **counts: int) -> None:
        """Entries the stream's cap took before they were archived (``features.losses``)."""
        losses.count(self.stats, self.client, self.stream, self.group, **counts)

    def _read(self, start: bytes | str, block_ms: int | None) -> tuple[list[Entry], bytes | None]:
        """The entries read with their fields, and the last id read (None: nothing was there)."""
        items = read_entries(
            self.client.xreadgroup(
                self.group, self.consumer, {self.stream: start}, count=self.batch, block=block_ms
            )
        )
        kept, lost = ack_trimmed(self.client, self.stream, self.group, items)
        self._lost(trimmed=lost)
        return kept, (items[-1][0] if items else None)

    def _add(self, buffer: _Buffer, entry_id: bytes, fields: dict) -> None:
        if entry_id in buffer.seen:
            return  # reclaimed from ourselves while still buffered (a very slow flush): once is enough
        buffer.seen.add(entry_id)
        buffer.ids.append(entry_id)
        try:
            kind = fields[b"kind"].decode()
            folder, contract = KINDS[kind]
            record = contract.model_validate_json(fields[b"data"])
        except (KeyError, UnicodeDecodeError, ValidationError) as exc:
            buffer.rejected.append(
                {
                    "entry": entry_id.decode(),
                    "reason": _reason(exc),
                    "fields": json.dumps({k.decode(): v.decode(errors="replace") for k, v in fields.items()}),
                }
            )
            return
        day = record.ts.astimezone(UTC).date()  # every event contract carries ts
        buffer.records[(folder, day)].append((entry_id, record))

    def _flush(self, buffer: _Buffer, on_flush: Callable[[ExportStats], None] | None) -> _Buffer:
        if not buffer:
            return _Buffer()
        for kind, _ in KINDS.values():  # every folder exists once anything is archived, as readers expect
            self.layout.events_dir(kind).mkdir(parents=True, exist_ok=True)
        for (kind, day), items in sorted(buffer.records.items()):
            _, contract = next(v for v in KINDS.values() if v[0] == kind)
            name = f"part-{_digest([i for i, _ in items])}.parquet"
            path = self.layout.day_dir(kind, day) / name
            if path.exists():
                self.stats.skipped_files += 1  # the same entries, written before a crash lost their ack
            else:
                _write_new(path, [r for _, r in items], contract)
                self.stats.files += 1
            setattr(self.stats, kind, getattr(self.stats, kind) + len(items))
            self.stats.days.add(day.isoformat())
        if buffer.rejected:
            digest = _digest([r["entry"].encode() for r in buffer.rejected])
            path = self.layout.root / "rejected" / f"part-{digest}.jsonl"
            if not path.exists():
                path.parent.mkdir(parents=True, exist_ok=True)
                tmp = path.with_name(path.name + ".tmp")
                tmp.write_text("".join(json.dumps(r) + "\n" for r in buffer.rejected), encoding="utf-8")
                os.replace(tmp, path)
            self.stats.rejected += len(buffer.rejected)
        # Acknowledge only now that every file holding these entries is complete on disk.
        for i in range(0, len(buffer.ids), 1000):
            self.stats.acked += self.client.xack(self.stream, self.group, *buffer.ids[i : i + 1000])
        if on_flush is not None:
            on_flush(self.stats)
        self._claim_cursor = "0-0"  # nothing of ours is pending now: look for a dead consumer's entries
        return _Buffer()


def _reason(exc: Exception) -> str:
    """Why an entry was rejected, naming the field at fault (a ValidationError's first line names neither
    the field nor the reason)."""
    if isinstance(exc, ValidationError) and exc.errors():
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"]) or "data"
        more = f" (and {len(exc.errors()) - 1} more)" if len(exc.errors()) > 1 else ""
        return f"{exc.title}: {where}: {err['msg']}{more}"
    if isinstance(exc, KeyError):
        return f"unknown kind or missing field {exc}"
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def _digest(entry_ids: list[bytes]) -> str:
    h = hashlib.sha256()
    for entry_id in entry_ids:
        h.update(entry_id + b"\n")
    return h.hexdigest()[:20]


def _write_new(path: Path, records: list[Record], contract: type[Record]) -> None:
    """Write a new part file atomically: readers (and a crash) never see half of one."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")  # not .parquet: DataLayout ignores it
    write_records(records, tmp, contract)
    os.replace(tmp, path)


def read_archive(out: Path) -> tuple[pa.Table, pa.Table]:
    """(impressions, interactions) of an archive, without the duplicates at-least-once delivery can leave."""
    layout = DataLayout(Path(out))
    tables = []
    for kind in ("impressions", "interactions"):
        if layout.events_dir(kind).is_dir():
            tables.append(layout.read_events(kind, validate_rows=False))
        else:  # e.g. no click has happened yet
            tables.append(arrow_schema(EVENT_CONTRACTS[kind]).empty_table())
    return dedupe_events(tables[0], tables[1])


def dedupe_events(imps: pa.Table, acts: pa.Table) -> tuple[pa.Table, pa.Table]:
    """The first of each impression (by request id) and interaction (by ``INTERACTION_KEY``)."""
    return first_of(imps, ["request_id"]), first_of(acts, INTERACTION_KEY)


def first_of(table: pa.Table, keys: list[str]) -> pa.Table:
    """The first row of each distinct ``keys``, in the table's order."""
    if table.num_rows == 0:
        return table
    indexed = table.select(keys).append_column("_row", pa.array(range(table.num_rows), pa.int64()))
    rows = indexed.group_by(keys, use_threads=False).aggregate([("_row", "min")])["_row_min"]
    # group_by does not promise the groups' order: sort the row numbers themselves, not their positions
    return table.take(rows.take(pc.sort_indices(rows)))


def _stop_on_signals(stop: threading.Event) -> dict[int, object]:
    """Make SIGINT and SIGTERM set ``stop``; returns the handlers to put back (none off the main thread)."""
    if threading.current_thread() is not threading.main_thread():
        return {}
    previous = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        previous[sig] = signal.signal(sig, lambda *_: stop.set())
    return previous
