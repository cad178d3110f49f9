"""The online feature store: ``FeatureStore``, the small interface callers name, and ``RedisFeatureStore``,
its Redis implementation (idempotent live updates, batch snapshots, one-round-trip reads, the event stream).

Works unchanged against one server, the embedded one, or a Redis Cluster: every multi-key operation stays
within one hash tag (see ``features.keys``).
"""

from __future__ import annotations

import json
import threading
import time
from abc import ABC, abstractmethod
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

import numpy as np
import redis
from redis.cluster import RedisCluster

from data.contracts import Interaction, SearchImpression, ServedFeatures
from data.errors import SmartblockError
from features.batch import Snapshot
from features.block_attributes import BlockAttributes, BlockVectors
from features.config import FeatureStoreSettings
from features.connection import RedisClient, deadline_left, mend_cluster_map
from features.connection import connect as connect_client
from features.definitions import (
    USER_SLOT,
    VECTOR_DTYPE,
    VECTOR_FIELD,
    VERSION_FIELD,
    Request,
    compute,
    plan,
)
from features.keys import Keys
from features.ops import Op, RequestContext
from features.packing import chunk_fields, join_blob

# Block vectors of a version that were incomplete when loaded (a model being written), or whose load failed,
# are read again after this long; complete ones never are. At most this many versions stay in memory (old
# and new model while user vectors move over after a retraining).
_VECTOR_RETRY_S = 60.0
_VECTOR_VERSIONS_KEPT = 2
# Attempts of one apply call: a NOSCRIPT or a cluster's MOVED sends it again; more than a few in a row
# means a cluster still resharding, which the caller waits out.
_APPLY_ATTEMPTS = 4
# The event stream keeps about this many newest entries (XADD MAXLEN ~): consumers and the archive read it
# long before, and a stopped consumer cannot make it grow without bound.
_EVENTS_MAXLEN = 1_000_000

# What the event stream carries: the ``kind`` field of each entry, by record. "served" (the feature rows a
# request was ranked on) is a log, not a feature-state event: the features consumer acknowledges it and
# applies nothing. Impressions and served features are the server's own; clients post interactions only.
Published = SearchImpression | Interaction | ServedFeatures
IMPRESSION, INTERACTION, SERVED = "impression", "interaction", "served"
STREAM_KINDS: dict[type, str] = {
    SearchImpression: IMPRESSION,
    Interaction: INTERACTION,
    ServedFeatures: SERVED,
}
SERVER_KINDS = frozenset({IMPRESSION, SERVED})

# Applies a batch's events on one hash tag, each exactly once, checking before it writes: see apply.lua.
_APPLY_LUA = resources.files("features").joinpath("apply.lua").read_text()


class ApplyError(SmartblockError):
    """Some events' ops could not be applied on a hash tag, and wrote nothing there: a key of another type
    in the way, a damaged stored value, an op the store cannot carry out. The rest of the batch was applied.

    ``failed`` maps each such event id to the tags it failed on, each with Redis' reason; ``applied`` counts
    the groups that changed state."""

    def __init__(self, failed: dict[str, dict[str, str]], applied: int) -> None:
        self.failed, self.applied = failed, applied
        event, tags = next(iter(failed.items()))
        super().__init__(f"{len(failed)} event(s) not applied, first {event!r}: {next(iter(tags.values()))}")


class FeatureStore(ABC):
    """What training, serving and the stream consumer need from an online store.

    ``RedisFeatureStore`` is the store; serving's ``GuardedStore`` puts one behind a circuit breaker.
    """

    settings: FeatureStoreSettings
    keys: Keys

    @abstractmethod
    def apply(self, events: Iterable[tuple[str, list[Op]]]) -> int:
        """Apply each (event id, ops) exactly once; return how many event-tag groups changed state.

        Each event's ops on one hash tag apply whole or not at all. Raises ``ApplyError`` after applying
        the rest when some of them could not be applied (their reasons inside)."""

    @abstractmethod
    def fetch(self, items: list[tuple[str, list[str] | None]]) -> list[dict]:
        """Read the named hashes (all fields when None) in one round trip."""

    @abstractmethod
    def write_hashes(
        self,
        hashes: Mapping[str, Mapping[str, float | str]],
        *,
        replace: bool,
        ttl_s: Mapping[str, float] | None = None,
    ) -> None:
        """Bulk write; ``replace`` swaps each hash atomically instead of merging; ``ttl_s`` sets expiries."""

    @abstractmethod
    def assemble(self, req: Request, catalog: BlockAttributes) -> np.ndarray:
        """All features of one request's candidate blocks (one row per block), read in one round trip."""

    @abstractmethod
    def publish(self, records: Iterable[Published]) -> list[str]:
        """Append records to the event stream (one pipelined round trip); their entry ids, in order."""

    def contexts(self, request_ids: list[str]) -> dict[str, RequestContext]:
        """The stored contexts of these requests (missing ones left out)."""
        items: list[tuple[str, list[str] | None]] = [
            (self.keys.request_context(r), None) for r in request_ids
        ]
        out = {}
        for r, fields in zip(request_ids, self.fetch(items), strict=True):
            ctx = RequestContext.from_fields({k: v.decode() for k, v in fields.items()})
            if ctx is not None:
                out[r] = ctx
        return out

    def defaults(self, req: Request, catalog: BlockAttributes) -> np.ndarray:
        """Rows from the catalogue and each feature's declared default: what a request gets without a store.

        ``compute`` over empty hashes is exactly the cold-start row, so no second definition exists.
        """
        empty: list[dict] = [{} for _ in plan(self.keys, req)]
        return compute(req, empty, catalog, self.settings)


class RedisFeatureStore(FeatureStore):
    def __init__(self, client: RedisClient, settings: FeatureStoreSettings) -> None:
        self.client = client
        self.settings = settings
        self.keys = Keys(settings.namespace)
        self._apply = client.register_script(_APPLY_LUA)
        self._vector_lock = threading.Lock()
        self._vectors_loaded: dict[str, float] = {}  # version -> monotonic time this store loaded it

    @classmethod
    def connect(cls, settings: FeatureStoreSettings) -> RedisFeatureStore:
        """A store on a new client for ``settings`` (``features.connection.connect``: checked with a ping)."""
        return cls(connect_client(settings), settings)

    # -- writes ---------------------------------------------------------------------------------------
    def apply(self, events: Iterable[tuple[str, list[Op]]]) -> int:
        # Every key and argument as bytes: redis-py encodes each str argument on its own, and that was a
        # fifth of the consumer's CPU per event.
        ttl = str(self.settings.dedup_ttl_hours * 3600).encode()
        calls: dict[str, _TagCall] = {}  # one script call per hash tag, its events in order
        for event_id, ops in events:
            for tag, group in _by_tag(self.keys, ops).items():
                if tag not in calls:
                    calls[tag] = _TagCall(tag, args=[ttl])
                calls[tag].add(event_id, self.keys.applied_marker(tag, event_id), group)
        return self._run_apply(list(calls.values()))

    def _run_apply(self, calls: list[_TagCall]) -> int:
        """Each call as one EVALSHA of the apply script, pipelined: the number of events applied on a tag
        (not seen before). Raises ``ApplyError`` when the script refused some events (BADEVENT), after the
        rest ran, and any other error Redis answered (out of memory, a cluster slot half-way through a
        move...) as it is.

        EVALSHA by hand, not through redis-py's ``Script``: a pipeline holding a ``Script`` asks SCRIPT
        EXISTS before every execute, one more round trip per batch, which was one in six of the stream
        consumer's Redis calls per event. These per-node pipelines also bypass redis-py's handling of a
        cluster's redirections. Calls are sent again, only those, when the answer says where: NOSCRIPT (a
        server restarted, or SCRIPT FLUSH: the script is loaded there first) and, on a cluster, MOVED (a
        resharded slot: the client's slot map is mended). A slot half-way through a move answers ASK or
        TRYAGAIN: its new node cannot run a script whose marker is not there yet, so that is raised, for
        the caller to wait out. The markers keep an event sent twice from counting twice."""
        applied = 0
        failed: dict[str, dict[str, str]] = {}
        for _ in range(_APPLY_ATTEMPTS):
            pipes: dict[str, Any] = {}
            placed = []  # the pipeline each call went to
            for call in calls:
                name = self._script_pipeline(pipes, call.keys[0])
                pipes[name].evalsha(self._apply.sha, len(call.keys), *call.keys, *call.args)
                placed.append(name)
            try:
                results = {name: iter(pipe.execute(raise_on_error=False)) for name, pipe in pipes.items()}
            except (redis.ConnectionError, redis.TimeoutError):
                self._node_lost()
                raise
            again, unloaded = [], set()
            resend: Exception | None = None
            for call, name in zip(calls, placed, strict=True):
                result = next(results[name])
                if isinstance(result, redis.exceptions.NoScriptError):
                    unloaded.add(name)
                elif isinstance(result, redis.exceptions.MovedError):
                    self._moved(result, name)
                elif isinstance(result, Exception):
                    raise result
                else:
                    for event_id, answer in zip(call.events, result, strict=True):
                        if isinstance(answer, bytes):  # BADEVENT: nothing of it written on this tag
                            failed.setdefault(event_id, {})[call.tag] = answer.decode(errors="replace")
                        else:
                            applied += answer
                    continue
                again.append(call)
                resend = result
            if not again:
                break
            for name in unloaded:  # an executed pipeline is empty and can be used again
                pipes[name].script_load(_APPLY_LUA)
                pipes[name].execute()
            calls = again
        else:
            assert resend is not None
            raise resend  # sent elsewhere at every attempt: a cluster still resharding, for a while
        if failed:
            raise ApplyError(failed, applied)
        return applied

    def _node_lost(self) -> None:
        """After a node did not answer: on a cluster, learn its map again, for the caller's next try (a
        failed-over primary's replica owns its slots now). redis-py does so for its own commands only, and
        nothing else the consumer sends may touch that node: its pipelines kept aiming at the dead one."""
        mend_cluster_map(self.client)

    def _moved(self, answer: redis.exceptions.MovedError, name: str) -> None:
        """Mend the cluster client's slot map after node ``name`` answered MOVED, for the next attempt."""
        if not isinstance(self.client, RedisCluster):
            raise answer  # a cluster's node reached without a cluster client (features.cluster is off)
        if not answer.host:  # a node that announces no address: the one that answered
            answer.host = self.client.get_node(node_name=name).host
        self.client.nodes_manager.move_slot(answer)

    def _script_pipeline(self, pipes: dict[str, Any], key: bytes) -> str:
        """The name of a pipeline in ``pipes`` (made when missing) that may run scripts: one per node on a
        cluster (redis-py's cluster pipeline refuses EVALSHA), so each script still runs where its hash tag
        lives."""
        if not isinstance(self.client, RedisCluster):
            if "" not in pipes:
                pipes[""] = self.client.pipeline(transaction=False)
            return ""
        node = self.client.get_node_from_key(key)
        if node.name not in pipes:
            pipes[node.name] = self.client.get_redis_connection(node).pipeline(transaction=False)
        return node.name

    def write_hashes(
        self,
        hashes: Mapping[str, Mapping[str, float | str]],
        *,
        replace: bool,
        ttl_s: Mapping[str, float] | None = None,
        chunk: int = 2000,
    ) -> None:
        pipe = self.client.pipeline(transaction=False)
        pending = 0
        for key, fields in hashes.items():
            if not fields:
                continue
            mapping = {f: _arg(v) for f, v in fields.items()}
            if replace:
                tmp = f"{key}:tmp"  # same hash tag, so RENAME is legal on a cluster
                pipe.delete(tmp)
                pipe.hset(tmp, mapping=mapping)
                pipe.rename(tmp, key)
            else:
                pipe.hset(key, mapping=mapping)
            if ttl_s and key in ttl_s:
                pipe.expire(key, max(int(ttl_s[key]), 1))
            pending += 1
            if pending >= chunk:
                pipe.execute()
                pending = 0
        if pending:
            pipe.execute()

    def publish(self, records: Iterable[Published]) -> list[str]:
        return self._append(
            {"kind": STREAM_KINDS[type(rec)], "data": rec.model_dump_json()} for rec in records
        )

    def republish(self, payloads: Iterable[Mapping[str, str]]) -> list[str]:
        """Append entries as the stream held them (``kind``, ``data``): a dead letter's event, sent back."""
        return self._append(payloads)

    def _append(self, entries: Iterable[Mapping[str, str]]) -> list[str]:
        pipe = self.client.pipeline(transaction=False)
        for fields in entries:
            pipe.xadd(self.keys.events_stream, dict(fields), maxlen=_EVENTS_MAXLEN, approximate=True)
        return [i.decode() if isinstance(i, bytes) else i for i in pipe.execute()]

    def write_snapshot(self, snapshot: Snapshot) -> None:
        """Materialize a batch snapshot: query hashes swapped whole, user profile fields set in place."""
        self.write_hashes(snapshot.query, replace=True)
        self.write_hashes(snapshot.user, replace=False)

    def write_meta(self, meta: dict) -> None:
        self.client.set(self.keys.meta, json.dumps(meta, sort_keys=True))

    def read_meta(self) -> dict | None:
        raw = self.client.get(self.keys.meta)
        return json.loads(raw) if raw else None

    # -- reads ----------------------------------------------------------------------------------------
    def fetch(self, items: list[tuple[str, list[str] | None]]) -> list[dict]:
        pipe = self.client.pipeline(transaction=False)
        for key, fields in items:
            if fields is None:
                pipe.hgetall(key)
            else:
                pipe.hmget(key, fields)
        out = []
        for (_, fields), got in zip(items, pipe.execute(), strict=True):
            if fields is None:
                out.append({k.decode(): v for k, v in got.items()})
            else:
                out.append({f: v for f, v in zip(fields, got, strict=True) if v is not None})
        return out

    def assemble(self, req: Request, catalog: BlockAttributes) -> np.ndarray:
        """All features of one request's candidate blocks, read in one pipelined round trip.

        Block vectors are not read per request: the first request whose user vector names a model version
        loads that version's block vectors into the catalogue (``block_vectors``), later ones use memory.
        """
        fetched = self.fetch(plan(self.keys, req))
        version = fetched[USER_SLOT].get(VERSION_FIELD)
        if version is not None:
            self.block_vectors(catalog, version.decode())
        return compute(req, fetched, catalog, self.settings)

    def block_vectors(self, catalog: BlockAttributes, version: str) -> BlockVectors | None:
        """The catalogue's block vectors of ``version``, loaded from the store when not in memory yet (or
        when an earlier load was incomplete and ``_VECTOR_RETRY_S`` has passed); None when not loaded.

        Never blocks a request on another's load, and never fails one: while a load runs, or after one
        failed (retried after ``_VECTOR_RETRY_S``), requests get the M3 defaults and their other features.
        """
        have = catalog.vectors.get(version)
        if not self._vectors_stale(have, version) or not self._vector_lock.acquire(blocking=False):
            return have
        if deadline_left() is not None:
            # Under a serving request's Redis deadline a bulk read of every block would never fit: load
            # beside the requests (a new thread runs outside the deadline), which get the defaults till then.
            threading.Thread(target=self._load_vectors, args=(catalog, version), daemon=True).start()
            return have
        return self._load_vectors(catalog, version)

    def _load_vectors(self, catalog: BlockAttributes, version: str) -> BlockVectors | None:
        """Load (called holding ``_vector_lock``, which it releases) unless another load just did."""
        try:
            have = catalog.vectors.get(version)
            if not self._vectors_stale(have, version):
                return have
            try:
                loaded = self.read_block_vectors(catalog.ids, version)
            except (redis.RedisError, OSError):
                self._vectors_loaded[version] = time.monotonic()  # not again before the retry time
                return have
            catalog.vectors[version] = loaded
            self._vectors_loaded[version] = time.monotonic()
            for old in sorted(self._vectors_loaded, key=self._vectors_loaded.__getitem__)[
                :-_VECTOR_VERSIONS_KEPT
            ]:
                catalog.vectors.pop(old, None)
                del self._vectors_loaded[old]
            return loaded
        finally:
            self._vector_lock.release()

    def _vectors_stale(self, have: BlockVectors | None, version: str) -> bool:
        if have is not None and have.complete:
            return False
        tried = self._vectors_loaded.get(version)
        return tried is None or time.monotonic() - tried >= _VECTOR_RETRY_S

    def read_block_vectors(self, block_ids: list[str], version: str, chunk: int = 1000) -> BlockVectors:
        """Every listed block's stored vector of ``version`` (others count as absent), pipelined in chunks
        small enough for a serving client's short socket timeout."""
        fields = [*chunk_fields(VECTOR_FIELD), VERSION_FIELD]
        want = version.encode()
        rows: list[np.ndarray | None] = []
        for lo in range(0, len(block_ids), chunk):
            items = [(self.keys.block_vector(b), fields) for b in block_ids[lo : lo + chunk]]
            for h in self.fetch(items):
                raw = join_blob(h, VECTOR_FIELD) if h.get(VERSION_FIELD) == want else None
                ok = raw is not None and len(raw) % VECTOR_DTYPE.itemsize == 0
                rows.append(np.frombuffer(raw, dtype=VECTOR_DTYPE).astype(np.float32) if ok else None)
        dims = [len(r) for r in rows if r is not None]
        dim = max(set(dims), key=dims.count) if dims else 0  # a stray vector of another width is absent
        matrix = np.zeros((len(block_ids), dim), dtype=np.float32)
        present = np.zeros(len(block_ids), dtype=bool)
        for i, r in enumerate(rows):
            if r is not None and len(r) == dim:
                matrix[i], present[i] = r, True
        return BlockVectors.from_rows(version, matrix, present)

    def clear(self) -> int:
        """Delete every key of this namespace (tests, rebuilds). Returns how many went."""
        removed = 0
        nodes = self.client.get_primaries() if hasattr(self.client, "get_primaries") else [None]
        for node in nodes:
            scan = (
                self.client.scan_iter(match=f"{self.keys.prefix}:*", count=1000, target_nodes=node)
                if node is not None
                else self.client.scan_iter(match=f"{self.keys.prefix}:*", count=1000)
            )
            batch = list(scan)
            for key in batch:
                removed += self.client.delete(key)
        return removed


@dataclass
class _TagCall:
    """One call of the apply script: the events of a batch on one hash tag, in order (see apply.lua)."""

    tag: str
    args: list[bytes]  # the markers' TTL, then per event: marker index, argument count, arguments
    keys: list[bytes] = field(default_factory=list)  # the events' markers and data keys, each once
    index: dict[str, bytes] = field(default_factory=dict)  # key -> its 1-based position in ``keys``
    events: list[str] = field(default_factory=list)  # event ids, in the order of the script's answers

    def add(self, event_id: str, marker: str, ops: list[Op]) -> None:
        event: list[bytes] = []
        for op in ops:
            event += [op[0].encode(), self._key(op[1]), *(_arg(v) for v in op[2:])]
            if op[0] in ("t", "v"):
                event.append(b"|")  # ends a variable-length argument list
        self.args += [self._key(marker), str(len(event)).encode(), *event]
        self.events.append(event_id)

    def _key(self, key: str) -> bytes:
        if key not in self.index:
            self.keys.append(key.encode())
            self.index[key] = str(len(self.keys)).encode()
        return self.index[key]


def _by_tag(keys: Keys, ops: list[Op]) -> dict[str, list[Op]]:
    groups: dict[str, list[Op]] = defaultdict(list)
    for op in ops:
        groups[keys.tag_of(op[1])].append(op)
    return groups


def _arg(v: object) -> bytes:
    if isinstance(v, bytes):
        return v
    return (repr(v) if isinstance(v, float) else str(v)).encode()
