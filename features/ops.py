"""How events change the live feature state: the one update definition for training and serving.

An event (an impression or an interaction) becomes a list of operations on hash fields. The offline replay
applies them to ``MemoryState`` in event-time order; the stream consumer applies the very same operations
to Redis (``features.store``). Operations are increments, decayed sums and sets, so replaying them gives
the same state whichever path ran them.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import NamedTuple

from features.block_attributes import tokens
from features.config import FeatureStoreSettings
from features.keys import Keys
from features.packing import (
    add_to_recent,
    chunk_fields,
    join_blob,
    keyword_id,
    pack_recent,
    pack_vector,
    split_blob,
    unpack_recent,
)

# ("v", key, field, width, slot, amount, slot, amount, ...) add to slots of a packed float64 vector;
# ("s", key, field, value) set; ("t", key, field, ts_s, tau_s, cap, *ids) count keyword ids into a decayed
# tally stored in chunks (features.packing.add_to_recent); ("x", key, ttl_s, ts_s) expire ttl_s after ts_s.
Op = tuple

# Slots of the packed per-(query, block) and per-block counters, and of the per-query counters.
STATS_WIDTH = 6
SHOWN, EXAMINED, CLICKS, SKIPS, DWELL_MS, DWELLS = range(STATS_WIDTH)
QUERY_FIELD, QUERY_WIDTH = "_", 2
CLICKS_FIELD = "c"  # user hash: recently clicked blocks (hashes of their ids), decayed
SHOWN_FIELD = "e"  # session hash: blocks the session was shown (hashes of their ids), decayed
LIFT_FIELD = "l"  # user hash: long-term click lift per intent (daily batch, features.intent_lift)
SEARCHES, QUERY_CLICKS = range(QUERY_WIDTH)


class Shown(NamedTuple):
    # A tuple, not a frozen dataclass: the replay makes one per shown block (41M on the large world), and
    # a frozen dataclass costs several times more to construct.
    block_id: str
    position: int


@dataclass(frozen=True)
class ImpressionEvent:
    request_id: str
    ts_ms: int
    user_id: str
    query: str
    shown: tuple[Shown, ...]
    session_id: str = ""  # "" = not part of a session the client named

    @property
    def event_id(self) -> str:
        return f"imp:{self.request_id}"

    @property
    def tracked_session(self) -> str:
        """The session whose tallies this search adds to; "" for none, or for the one-request session the API
        logs when the client named none (it would never be read)."""
        return self.session_id if self.session_id != self.request_id else ""


@dataclass(frozen=True)
class InteractionEvent:
    request_id: str
    ts_ms: int
    user_id: str
    block_id: str
    position: int
    type: str  # click | dwell
    dwell_ms: int | None = None
    client_id: str | None = None  # the client's event id (Interaction.event_id), when it sent one

    @property
    def event_id(self) -> str:
        """The id the applied-event markers dedupe on: the client's id when given, so a retry (with the
        server's receive time as its ts) is the same event; scoped to the request, so one client's ids
        cannot suppress another request's events."""
        if self.client_id is not None:
            return f"{self.type}:{self.request_id}:id:{self.client_id}"
        return f"{self.type}:{self.request_id}:{self.block_id}:{self.position}:{self.ts_ms}"


@dataclass
class RequestContext:
    """What a click needs to know about its request: the query, and what was shown and clicked."""

    query: str
    user_id: str
    shown: dict[int, str]  # position -> block id
    clicked: set[int] = field(default_factory=set)
    skipped: set[int] = field(default_factory=set)
    session_id: str = ""

    @classmethod
    def of(cls, imp: ImpressionEvent) -> RequestContext:
        """The context an impression starts (what its ops store in the context hash)."""
        shown = {s.position: s.block_id for s in imp.shown}
        return cls(imp.query, imp.user_id, shown, session_id=imp.tracked_session)

    @classmethod
    def from_fields(cls, fields: dict[str, str]) -> RequestContext | None:
        if "q" not in fields:
            return None
        shown = {int(k[2:]): v for k, v in fields.items() if k.startswith("p|")}
        clicked = {int(k[2:]) for k in fields if k.startswith("c|")}
        skipped = {int(k[2:]) for k in fields if k.startswith("k|")}
        return cls(
            query=fields["q"],
            user_id=fields.get("u", ""),
            shown=shown,
            clicked=clicked,
            skipped=skipped,
            session_id=fields.get("s", ""),
        )

    def refusal(self, ev: InteractionEvent) -> tuple[str, str] | None:
        """(field, reason) when the event does not fit what this request served, else None.

        Only blocks the request showed, at the position it showed them, to the user it served, may be
        counted: anything else would plant counters for ids nobody was shown.
        """
        shown = self.shown.get(ev.position)
        if shown is None:
            return "position", f"request {ev.request_id!r} showed no block at position {ev.position}"
        if shown != ev.block_id:
            return "block_id", f"request {ev.request_id!r} showed another block at position {ev.position}"
        if self.user_id and ev.user_id != self.user_id:
            return "user_id", f"request {ev.request_id!r} was served to another user"
        return None

    def note(self, ev: InteractionEvent) -> None:
        """Record what a click did to this request, as its ops record it in the stored context."""
        if ev.type == "click":
            self.skipped.update(p for p in self.shown if p < ev.position and p not in self.clicked)
            self.clicked.add(ev.position)


class OpBuilder:
    def __init__(self, keys: Keys, settings: FeatureStoreSettings) -> None:
        self.keys = keys
        self.prior = settings.position_prior
        self.tau_s = settings.interest_half_life_hours * 3600 / math.log(2)
        self.user_ttl_s = settings.user_ttl_days * 86_400
        self.request_ttl_s = settings.request_ttl_hours * 3600
        self.live_ttl_s = settings.live_ttl_days * 86_400
        self.recent_cap = settings.recent_keywords
        self.session_tau_s = settings.session_half_life_minutes * 60 / math.log(2)
        self.shown_cap = settings.session_shown_blocks
        self.session_ttl_s = int(settings.session_ttl_hours * 3600)  # EXPIRE takes whole seconds

    def examination(self, position: int) -> float:
        return self.prior[min(position, len(self.prior)) - 1]

    def impression(self, imp: ImpressionEvent) -> list[Op]:
        k = self.keys
        qb = k.query_blocks(imp.query)
        ctx = k.request_context(imp.request_id)
        ops: list[Op] = [
            ("v", qb, QUERY_FIELD, QUERY_WIDTH, SEARCHES, 1.0),
            ("s", ctx, "q", imp.query),
            ("s", ctx, "u", imp.user_id),
        ]
        for s in imp.shown:
            exam = self.examination(s.position)
            ops += [
                ("v", qb, s.block_id, STATS_WIDTH, SHOWN, 1.0, EXAMINED, exam),
                ("v", k.block_stats(s.block_id), s.block_id, STATS_WIDTH, SHOWN, 1.0, EXAMINED, exam),
                ("s", ctx, f"p|{s.position}", s.block_id),
            ]
        ops.append(("x", ctx, self.request_ttl_s, imp.ts_ms / 1000.0))
        user = k.user(imp.user_id)
        ids = [keyword_id(t) for t in dict.fromkeys(tokens(imp.query))]
        if ids:
            ops.append(("t", user, "r", imp.ts_ms / 1000.0, self.tau_s, self.recent_cap, *ids))
        ops.append(("x", user, self.user_ttl_s, imp.ts_ms / 1000.0))
        if imp.tracked_session:
            # The session's own tallies: a heavy user's sessions interleave within the user's half-life, so
            # only these say what *this* session is after.
            session = k.session(imp.tracked_session)
            ops += [
                ("s", ctx, "s", imp.tracked_session),
                ("v", session, QUERY_FIELD, QUERY_WIDTH, SEARCHES, 1.0),
            ]
            if ids:
                ops.append(("t", session, "r", imp.ts_ms / 1000.0, self.session_tau_s, self.recent_cap, *ids))
            # What the session was shown: a block or intent it saw and left says as much as a click.
            shown = [keyword_id(s.block_id) for s in imp.shown]
            if shown:
                ops.append(
                    (
                        "t",
                        session,
                        SHOWN_FIELD,
                        imp.ts_ms / 1000.0,
                        self.session_tau_s,
                        self.shown_cap,
                        *shown,
                    )
                )
            ops.append(("x", session, self.session_ttl_s, imp.ts_ms / 1000.0))
        return self._expiring(ops, imp.ts_ms / 1000.0)

    def _expiring(self, ops: list[Op], ts_s: float) -> list[Op]:
        """``ops`` plus an expiry (``live_ttl_s``, refreshed by each event) for every key they write that
        has none of its own: nothing an event creates, whatever ids a client sends, stays for good."""
        timed = {op[1] for op in ops if op[0] == "x"}
        written = dict.fromkeys(op[1] for op in ops if op[0] != "x" and op[1] not in timed)
        return ops + [("x", key, self.live_ttl_s, ts_s) for key in written]

    def interaction(self, ev: InteractionEvent, ctx: RequestContext) -> list[Op]:
        k = self.keys
        qb = k.query_blocks(ctx.query)
        bs = k.block_stats(ev.block_id)
        b = ev.block_id
        ts_s = ev.ts_ms / 1000.0
        if ev.type == "dwell":
            ms = float(ev.dwell_ms or 0)
            return self._expiring(
                [
                    ("v", qb, b, STATS_WIDTH, DWELL_MS, ms, DWELLS, 1.0),
                    ("v", bs, b, STATS_WIDTH, DWELL_MS, ms, DWELLS, 1.0),
                ],
                ts_s,
            )
        ops: list[Op] = [
            ("v", qb, b, STATS_WIDTH, CLICKS, 1.0),
            ("v", qb, QUERY_FIELD, QUERY_WIDTH, QUERY_CLICKS, 1.0),
            ("v", bs, b, STATS_WIDTH, CLICKS, 1.0),
            # Recent clicks, decayed like recent query keywords: in-session interest in what was read.
            (
                "t",
                k.user(ev.user_id),
                CLICKS_FIELD,
                ts_s,
                self.tau_s,
                self.recent_cap,
                keyword_id(b),
            ),
        ]
        if ctx.session_id:
            session = k.session(ctx.session_id)
            ops += [
                ("v", session, QUERY_FIELD, QUERY_WIDTH, QUERY_CLICKS, 1.0),
                (
                    "t",
                    session,
                    CLICKS_FIELD,
                    ev.ts_ms / 1000.0,
                    self.session_tau_s,
                    self.recent_cap,
                    keyword_id(b),
                ),
                ("x", session, self.session_ttl_s, ev.ts_ms / 1000.0),
            ]
        ctx_key = k.request_context(ev.request_id)
        # A skip: shown above a click and not clicked before it (cascade reading); once per request.
        for pos, other in ctx.shown.items():
            if pos < ev.position and pos not in ctx.clicked and pos not in ctx.skipped:
                ops += [
                    ("v", qb, other, STATS_WIDTH, SKIPS, 1.0),
                    ("v", k.block_stats(other), other, STATS_WIDTH, SKIPS, 1.0),
                ]
                ops.append(("s", ctx_key, f"k|{pos}", "1"))
        ops.append(("s", ctx_key, f"c|{ev.position}", "1"))
        # A context that expired between its read and this write must not come back without a TTL.
        ops += [
            ("x", ctx_key, self.request_ttl_s, ts_s),
            ("x", k.user(ev.user_id), self.user_ttl_s, ts_s),
        ]
        return self._expiring(ops, ts_s)


class _Tally:
    """A decayed tally (op ``t``) kept unpacked between events, packed (and split in chunks) when read."""

    __slots__ = ("_fields", "items", "last")

    def __init__(self, last: float, items: dict[int, float]) -> None:
        self.last, self.items = last, items
        self._fields: dict[str, bytes] | None = None

    def add(self, ids: list[int], ts_s: float, tau_s: float, cap: int) -> None:
        self.last, self.items = add_to_recent(self.last, self.items, ids, ts_s, tau_s, cap)
        self._fields = None

    def fields(self, name: str) -> dict[str, bytes]:
        if self._fields is None:
            self._fields = split_blob(name, pack_recent(self.last, self.items))
        return self._fields


class MemoryState:
    """The live state in a dict of hashes; what Redis holds, for offline replay and tests."""

    def __init__(self) -> None:
        # Counters (lists) and tallies stay unpacked between events, packed when read: the same float64
        # additions and float32 roundings the store's script does on its packed copy, several times faster.
        self.hashes: dict[str, dict[str, list[float] | _Tally | str | bytes]] = defaultdict(dict)
        self.expire_at: dict[str, float] = {}  # key -> event-time seconds when it expires

    def apply(self, ops: list[Op]) -> None:
        for op in ops:
            kind, key = op[0], op[1]
            if kind == "v":
                h = self.hashes[key]
                values = h.get(op[2])
                if values is None:
                    values = h[op[2]] = [0.0] * op[3]
                for slot, amount in zip(op[4::2], op[5::2], strict=True):
                    values[slot] += amount
            elif kind == "s":
                self.hashes[key][op[2]] = op[3]
            elif kind == "t":
                h = self.hashes[key]
                tally = h.get(op[2])
                if not isinstance(tally, _Tally):
                    # A tally's first event, or a packed one set field by field (op "s"), as the store's
                    # script would read it: its chunks joined.
                    blob = join_blob(h, op[2])
                    for f in chunk_fields(op[2]):
                        h.pop(f, None)
                    tally = h[op[2]] = _Tally(*unpack_recent(blob)) if blob else _Tally(op[3], {})
                tally.add(list(op[6:]), op[3], op[4], op[5])
            elif kind == "x":
                self.expire_at[key] = max(self.expire_at.get(key, 0.0), op[3] + op[2])

    def fetch(self, key: str, fields: list[str] | None) -> dict[str, str | bytes]:
        h = self.hashes.get(key, {})
        if fields is None:
            return self._stored(h)
        out: dict[str, str | bytes] = {}
        for f in fields:
            if f in h:
                self._put(out, f, h[f], fields)
        return out

    def export(self) -> Iterator[tuple[str, dict[str, str | bytes]]]:
        """Every hash as Redis stores it."""
        for key, h in self.hashes.items():
            yield key, self._stored(h)

    @classmethod
    def _stored(cls, h: dict) -> dict[str, str | bytes]:
        out: dict[str, str | bytes] = {}
        for f, value in h.items():
            cls._put(out, f, value)
        return out

    @staticmethod
    def _put(out: dict[str, str | bytes], f: str, value: object, asked: list[str] | None = None) -> None:
        """Field ``f`` as Redis stores it: counters packed, a tally packed into its chunk fields (the
        ``asked`` ones only, when given)."""
        if isinstance(value, list):
            out[f] = pack_vector(value)
        elif isinstance(value, _Tally):
            out.update((c, b) for c, b in value.fields(f).items() if asked is None or c in asked)
        else:
            out[f] = value  # type: ignore[assignment]

    def context(self, request_id: str, keys: Keys) -> RequestContext | None:
        fields = self.hashes.get(keys.request_context(request_id))
        return RequestContext.from_fields({k: str(v) for k, v in fields.items()}) if fields else None
