"""Logged events in event-time order, and their replay into a ``MemoryState``.

Arrow tables become the light event records of ``features.ops``; building pydantic models for millions of
logged rows would cost more than the replay itself (the loaders validated the rows already).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Iterator
from functools import partial

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from data.errors import DataError
from features.config import FeatureStoreSettings
from features.keys import Keys
from features.ops import ImpressionEvent, InteractionEvent, MemoryState, OpBuilder, RequestContext, Shown


def _ms(col: pa.ChunkedArray) -> np.ndarray:
    return col.cast(pa.int64()).to_numpy()


# Makes a Shown from a (block, position) pair in C: the NamedTuple's own constructor is Python code, and the
# large world calls it 41M times.
_as_shown: Callable[[tuple[str, int]], Shown] = partial(tuple.__new__, Shown)


def impressions_of(table: pa.Table) -> list[ImpressionEvent]:
    # The shown blocks as two flat columns cut per row: a list of dicts per row costs several times more.
    lists = table["shown"]
    flat = pc.list_flatten(lists)
    blocks = pc.struct_field(flat, "block_id").to_pylist()
    positions = pc.struct_field(flat, "position").to_pylist()
    lengths = np.asarray(pc.fill_null(pc.list_value_length(lists), 0).to_numpy(), dtype=np.int64)
    ends = np.cumsum(lengths)
    shown = [
        tuple(map(_as_shown, zip(blocks[start:end], positions[start:end], strict=True)))
        for start, end in zip((ends - lengths).tolist(), ends.tolist(), strict=True)
    ]
    return [
        ImpressionEvent(r, int(ts), u, q, items, sid)
        for r, ts, u, q, items, sid in zip(
            table["request_id"].to_pylist(),
            _ms(table["ts"]),
            table["user_id"].to_pylist(),
            table["query"].to_pylist(),
            shown,
            # Tables without the column (a selection, older exports) replay without sessions.
            table["session_id"].to_pylist() if "session_id" in table.column_names else [""] * table.num_rows,
            strict=True,
        )
    ]


def interactions_of(table: pa.Table) -> list[InteractionEvent]:
    # Tables built before interactions carried a client event id have no such column: all None.
    ids = table["event_id"].to_pylist() if "event_id" in table.column_names else [None] * table.num_rows
    return [
        InteractionEvent(r, int(ts), u, b, p, t, d, e)
        for r, ts, u, b, p, t, d, e in zip(
            table["request_id"].to_pylist(),
            _ms(table["ts"]),
            table["user_id"].to_pylist(),
            table["block_id"].to_pylist(),
            table["position"].to_pylist(),
            table["type"].to_pylist(),
            table["dwell_ms"].to_pylist(),
            ids,
            strict=True,
        )
    ]


#: Events made into records at a time: a large log never exists as Python objects all at once (the large
#: world's 26M events and 41M shown blocks took more than 24 GB that way).
CHUNK = 65_536


def in_time_order(
    impressions: pa.Table, interactions: pa.Table, chunk: int = CHUNK
) -> Iterator[ImpressionEvent | InteractionEvent]:
    """All events sorted by time; at equal times an impression comes before the clicks it caused.

    The order is computed on the tables' columns; records are made ``chunk`` events at a time.
    """
    # One contiguous table each: Arrow's take on a table of many chunks concatenates them on every call
    # (on the large world, 3.8 s per chunk of events against 0.015 s).
    impressions, interactions = impressions.combine_chunks(), interactions.combine_chunks()
    n_imps = impressions.num_rows
    ts = np.concatenate([_ms(impressions["ts"]), _ms(interactions["ts"])]).astype(np.int64)
    kind = np.concatenate([np.zeros(n_imps, np.int8), np.ones(interactions.num_rows, np.int8)])
    order = np.lexsort((kind, ts))
    for start in range(0, len(order), chunk):
        rows = order[start : start + chunk]
        is_imp = rows < n_imps
        imps = iter(impressions_of(impressions.take(rows[is_imp])))
        acts = iter(interactions_of(interactions.take(rows[~is_imp] - n_imps)))
        for imp in is_imp.tolist():
            yield next(imps) if imp else next(acts)


class Replayer:
    """Applies events to an in-memory state with the same operations the stream consumer uses."""

    def __init__(self, settings: FeatureStoreSettings, keys: Keys | None = None) -> None:
        self.keys = keys or Keys(settings.namespace)
        self.ops = OpBuilder(self.keys, settings)
        self.state = MemoryState()
        self.events = 0
        # Live request contexts, kept as objects: rebuilding them from the stored hash per click is slow.
        self._contexts: dict[str, RequestContext] = {}
        # Event ids of applied events that carried a client id: an archived client retry counts once here
        # as it did online (the store's applied-event markers). Logs without client ids add nothing.
        self._applied: set[str] = set()
        # The short-lived hashes (request contexts, sessions) leave memory when they expire in event time,
        # as in Redis: (expiry in event-time seconds, key, its request id or ""), one entry per watched key.
        # One queue per kind: all of a kind's keys have one TTL, so a queue stays in expiry order (a key
        # extended since it was queued is queued again at the back). Kept for the whole replay, the large
        # world's 5M contexts and 1M+ sessions took most of its memory.
        self._expiring: dict[str, deque[tuple[float, str, str]]] = {"ctx": deque(), "session": deque()}
        self._watched: set[str] = set()
        self._check_at = math.inf  # the earliest queued expiry: no event before it has anything to drop
        self._expired: set[str] = set()  # request ids whose context expired
        self.late = 0  # interactions after their request's context expired: online sends them to dead letters

    def apply(self, event: ImpressionEvent | InteractionEvent) -> None:
        if event.ts_ms / 1000.0 >= self._check_at:
            self._expire(event.ts_ms / 1000.0)
        if isinstance(event, ImpressionEvent):
            self.state.apply(self.ops.impression(event))
            self._contexts[event.request_id] = RequestContext.of(event)
            self._watch("ctx", self.keys.request_context(event.request_id), event.request_id)
            if event.tracked_session:
                self._watch("session", self.keys.session(event.tracked_session), "")
        else:
            ctx = self._contexts.get(event.request_id)
            if ctx is None and event.request_id in self._expired:
                self.late += 1
                return
            if ctx is None:
                raise DataError(
                    f"interaction of request {event.request_id!r} has no impression before it",
                    field="request_id",
                )
            if event.client_id is not None:
                if event.event_id in self._applied:
                    return
                self._applied.add(event.event_id)
            self.state.apply(self.ops.interaction(event, ctx))
            ctx.note(event)
        self.events += 1

    def _watch(self, kind: str, key: str, request_id: str) -> None:
        if key not in self._watched:
            self._watched.add(key)
            expiry = self.state.expire_at[key]
            self._expiring[kind].append((expiry, key, request_id))
            self._check_at = min(self._check_at, expiry)

    def _expire(self, now_s: float) -> None:
        """Drop the watched hashes that expired by ``now_s``, as Redis would; a later event on the same key
        starts it afresh, as in Redis. An event since the entry was queued may have extended it."""
        for queue in self._expiring.values():
            while queue and queue[0][0] <= now_s:
                _, key, request_id = queue.popleft()
                expiry = self.state.expire_at.get(key, 0.0)
                if expiry > now_s:  # extended since: look again then
                    queue.append((expiry, key, request_id))
                    continue
                self._watched.discard(key)
                self.state.hashes.pop(key, None)
                self.state.expire_at.pop(key, None)
                if request_id:
                    self._contexts.pop(request_id, None)
                    self._expired.add(request_id)
        self._check_at = min((queue[0][0] for queue in self._expiring.values() if queue), default=math.inf)
