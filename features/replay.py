"""Logged events in event-time order, and their replay into a ``MemoryState``.

Arrow tables become the light event records of ``features.ops``; building pydantic models for millions of
logged rows would cost more than the replay itself (the loaders validated the rows already).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pyarrow as pa

from data.errors import DataError
from features.config import FeatureStoreSettings
from features.keys import Keys
from features.ops import ImpressionEvent, InteractionEvent, MemoryState, OpBuilder, RequestContext, Shown


def _ms(col: pa.ChunkedArray) -> np.ndarray:
    return col.cast(pa.int64()).to_numpy()


def impressions_of(table: pa.Table) -> list[ImpressionEvent]:
    shown = table["shown"].to_pylist()
    return [
        ImpressionEvent(r, int(ts), u, q, tuple(Shown(s["block_id"], s["position"]) for s in items), sid)
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


def in_time_order(
    impressions: pa.Table, interactions: pa.Table
) -> Iterator[ImpressionEvent | InteractionEvent]:
    """All events sorted by time; at equal times an impression comes before the clicks it caused."""
    imps, acts = impressions_of(impressions), interactions_of(interactions)
    ts = np.concatenate([[e.ts_ms for e in imps], [e.ts_ms for e in acts]]).astype(np.int64)
    kind = np.concatenate([np.zeros(len(imps), np.int8), np.ones(len(acts), np.int8)])
    events = imps + acts
    for i in np.lexsort((kind, ts)):
        yield events[i]


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

    def apply(self, event: ImpressionEvent | InteractionEvent) -> None:
        if isinstance(event, ImpressionEvent):
            self.state.apply(self.ops.impression(event))
            self._contexts[event.request_id] = RequestContext.of(event)
        else:
            ctx = self._contexts.get(event.request_id)
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
