"""Each user's time-ordered consumed blocks, cut strictly before an instant so nothing leaks from later days.

A consumed block is a click on a block that the request's page showed (clicks are joined to impressions on
``(request_id, block_id)``; several clicks on one block's docs count once, at the first click). Every
consumed event keeps its click time and its request's time: the request time is what a model may know
when it is asked to rank that page.

Events are stored flat, sorted by (user, click time), with CSR offsets per user, so a batch of histories
is a few vectorized gathers.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from data.layout import DataLayout
from data.logstats import shown_blocks

PAD = 0  # item index 0 is padding; block i of the vocabulary is item i + 1
USER_SHIFT = 1 << 42  # (user, time in ms) packed in one int64: ms timestamps stay below 2^42 until 2109
N_GAP_BUCKETS = 24  # 0 padding, 1 "no previous event", 2.. log2-spaced gaps


# Midnight UTC in epoch ms: the one definition the training sets use, so the cuts agree.


def gap_bucket(gap_ms: np.ndarray) -> np.ndarray:
    """Log2-spaced buckets of a time gap (10 s to ~30 days); a negative gap means "no previous event"."""
    seconds = np.maximum(np.asarray(gap_ms, dtype=np.float64), 0.0) / 1000.0
    bucket = 2 + np.clip(np.floor(np.log2(1.0 + seconds / 10.0)), 0, N_GAP_BUCKETS - 3).astype(np.int64)
    return np.where(np.asarray(gap_ms) < 0, 1, bucket)


@dataclass(frozen=True)
class Sequences:
    """Consumed-block events of every user, sorted by (user, click time).

    ``item`` holds 1-based indices into ``block_ids`` (0 is padding); ``offsets[u]:offsets[u + 1]`` are user
    ``u``'s events; ``prev_gap_ms`` is the gap to the same user's previous event (-1 for the first).
    """

    block_ids: np.ndarray  # (B,) the item vocabulary
    user_ids: np.ndarray  # (U,) users with at least one event, sorted
    user: np.ndarray  # (N,) int64 user index
    item: np.ndarray  # (N,) int64 item index, 1-based
    ts_ms: np.ndarray  # (N,) click time
    req_ms: np.ndarray  # (N,) the clicked page's request time (<= ts_ms)
    prev_gap_ms: np.ndarray  # (N,)
    offsets: np.ndarray  # (U + 1,)

    @property
    def n_items(self) -> int:
        """Vocabulary size including the padding index."""
        return len(self.block_ids) + 1

    @property
    def n_events(self) -> int:
        return len(self.item)

    def user_index(self) -> dict[str, int]:
        return {u: i for i, u in enumerate(self.user_ids.tolist())}

    def position(self) -> np.ndarray:
        """(N,) each event's 0-based position in its user's sequence."""
        return np.arange(self.n_events) - self.offsets[self.user]

    def item_counts(self, before_ms: int | None = None) -> np.ndarray:
        """(n_items,) consumed count of each item (index 0 stays 0), optionally only clicks before a time."""
        keep = self.item if before_ms is None else self.item[self.ts_ms < before_ms]
        return np.bincount(keep, minlength=self.n_items).astype(np.float64)

    def before(self, cutoff_ms: int) -> Sequences:
        """Only events clicked strictly before ``cutoff_ms`` (the same as building with that cutoff)."""
        keep = self.ts_ms < cutoff_ms
        kept_users, user = np.unique(self.user[keep], return_inverse=True)
        user = user.astype(np.int64)
        return Sequences(
            block_ids=self.block_ids,
            user_ids=self.user_ids[kept_users],
            user=user,
            item=self.item[keep],
            ts_ms=self.ts_ms[keep],
            req_ms=self.req_ms[keep],
            prev_gap_ms=self.prev_gap_ms[keep],  # a kept event's predecessor is earlier, so kept too
            offsets=np.searchsorted(user, np.arange(len(kept_users) + 1)).astype(np.int64),
        )

    def histories(
        self, users: np.ndarray, ends: np.ndarray, length: int
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The ``length`` events of each user before a (exclusive) global end index, right-aligned.

        Args:
            users: (n,) user indices.
            ends: (n,) global event indices within each user's range ``[offsets[u], offsets[u + 1]]``: the
                history of end ``j`` is the user's events before ``j``; ``offsets[u + 1]`` gives it all.
            length: history length L.

        Returns:
            items (n, L) int64 (0 = padding), gap buckets (n, L) int64, and the last history event's global
            index (n,) (-1 when the history is empty).
        """
        users = np.asarray(users, dtype=np.int64)
        ends = np.asarray(ends, dtype=np.int64)
        starts = self.offsets[users]
        idx = ends[:, None] - length + np.arange(length)[None, :]  # (n, L)
        valid = idx >= starts[:, None]
        safe = np.clip(idx, 0, max(self.n_events - 1, 0))
        items = np.where(valid, self.item[safe], PAD)
        first = idx == starts[:, None]  # the user's first event has no previous one
        gaps = np.where(valid, np.where(first, 1, gap_bucket(self.prev_gap_ms[safe])), 0)
        last = np.where(ends > starts, ends - 1, -1)
        return items, gaps, last


def consumed_table(
    layout: DataLayout, *, before_ms: int | None = None, validate_rows: bool = True
) -> pa.Table:
    """Consumed-block events: user_id, block_id, ts_ms (first click), req_ms; only those strictly before
    ``before_ms`` (both the click and its request), so a cutoff never lets later events in."""
    end = None if before_ms is None else datetime.fromtimestamp((before_ms - 1) / 1000, tz=UTC).date()
    imps = layout.read_events("impressions", end=end, validate_rows=validate_rows)
    acts = layout.read_events("interactions", end=end, validate_rows=validate_rows)
    # Each shown block's first click (a click on a block its page did not show is dropped): integer codes,
    # not a join of request and block id strings, which took most of the large world's memory.
    shown = shown_blocks(imps, acts)
    hit = np.flatnonzero(shown.clicked)
    rows = pa.array(shown.parent[hit])
    out = pa.table(
        {
            "user_id": imps["user_id"].take(rows),
            "block_id": shown.block_ids.take(pa.array(shown.block[hit])),
            "ts_ms": shown.first_click_ms[hit],
            "req_ms": imps["ts"].cast(pa.int64()).take(rows),
        }
    )
    if before_ms is not None:
        out = out.filter(pc.less(out["ts_ms"], before_ms))
    return out


def build_sequences(
    layout: DataLayout,
    block_ids: np.ndarray,
    *,
    before_ms: int | None = None,
    validate_rows: bool = True,
) -> Sequences:
    """Sequences of consumed blocks before ``before_ms`` (all events when None) over a fixed vocabulary.

    Blocks outside ``block_ids`` (created after the model was trained) are left out of the sequences.
    """
    table = consumed_table(layout, before_ms=before_ms, validate_rows=validate_rows)
    # Vectorized lookups (millions of events on large logs): position in the vocabulary, -1 when unknown.
    pos = pc.index_in(table["block_id"], value_set=pa.array(block_ids.tolist(), pa.string()))
    item = pc.fill_null(pos, -1).to_numpy(zero_copy_only=False).astype(np.int64) + 1
    known = item != PAD
    table = table.filter(pa.array(known))
    item = item[known]
    user_ids = np.array(sorted(pc.unique(table["user_id"]).to_pylist()), dtype=object)
    user = pc.index_in(table["user_id"], value_set=pa.array(user_ids.tolist(), pa.string()))
    user = user.to_numpy(zero_copy_only=False).astype(np.int64)
    ts = table["ts_ms"].to_numpy().astype(np.int64)
    req = table["req_ms"].to_numpy().astype(np.int64)
    order = np.lexsort((item, ts, user))  # item breaks exact-time ties, so the order is deterministic
    user, item, ts, req = user[order].astype(np.int64), item[order], ts[order], req[order]
    offsets = np.searchsorted(user, np.arange(len(user_ids) + 1)).astype(np.int64)
    prev_gap = np.full(len(item), -1, dtype=np.int64)
    if len(item) > 1:
        same = user[1:] == user[:-1]
        prev_gap[1:] = np.where(same, ts[1:] - ts[:-1], -1)
    return Sequences(
        block_ids=np.asarray(block_ids, dtype=object),
        user_ids=user_ids,
        user=user,
        item=item,
        ts_ms=ts,
        req_ms=np.minimum(req, ts),
        prev_gap_ms=prev_gap,
        offsets=offsets,
    )
