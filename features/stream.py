"""Live updates: events on a Redis Stream (written by ``FeatureStore.publish``), applied to the online
features by a consumer group.

Delivery is at least once; application is idempotent (``RedisFeatureStore.apply`` marks each event per
hash tag), so a redelivered event counts once. A consumer keeps its name across restarts and first finishes
its own pending events; events a dead consumer left pending are reclaimed with XAUTOCLAIM once idle for
``stream_claim_idle_ms``. An event that cannot be applied (malformed, refused, its impression never seen,
refused by the data in Redis) goes to a dead-letter stream with its reason and payload, to be sent back
once mended (``features.dead_letters``); a refusal by Redis itself is waited out.
Entries of kind "served" (the feature rows a request was ranked on, logged beside its impression for the
archive) change no feature state: they are acknowledged without being parsed.

A Redis that comes back without the group (restarted empty, or with the group lost) answers NOGROUP: the
consumer creates the group again from the start of the stream and goes on (the per-tag markers make any
event it had already applied count once), rather than dying and leaving clicks unapplied.
"""

from __future__ import annotations

import json
import logging
import re
import socket
import threading
import time
from dataclasses import dataclass, field

import redis
from pydantic import ValidationError

from data.contracts import Interaction, SearchImpression
from features import dead_letters, losses
from features.config import FeatureStoreSettings
from features.connection import block_ms_within_timeout, mend_cluster_map
from features.losses import CapGap, Entry, ack_trimmed, cap_gap, claimed_entries, take_gap
from features.ops import ImpressionEvent, InteractionEvent, OpBuilder, RequestContext, Shown
from features.store import IMPRESSION, INTERACTION, SERVED, ApplyError, RedisFeatureStore

GROUP = "features"

# What a consumer waits out and retries (``StreamConsumer.attempt``): a slow, restarting or failing-over
# Redis.
TRANSIENT = (
    redis.TimeoutError,
    redis.ConnectionError,
    redis.exceptions.ClusterError,
    redis.exceptions.RedisClusterException,
    OSError,
)
log = logging.getLogger("smartblock.features")


def default_consumer_name(group: str = GROUP) -> str:
    """This host's consumer name in ``group`` ("features", or the archive's "archive").

    Stable across restarts of the same host, so a restarted consumer first finishes its own pending entries.
    """
    return f"{socket.gethostname()}-{group}"


def to_event(kind: str, data: str) -> ImpressionEvent | InteractionEvent | None:
    """Parse and validate one stream payload against its contract; None for a log entry that changes no
    feature state ("served": the rows a request was ranked on, for the archive), which is not even parsed."""
    if kind == SERVED:
        return None
    if kind == IMPRESSION:
        imp = SearchImpression.model_validate_json(data)
        return ImpressionEvent(
            imp.request_id,
            int(imp.ts.timestamp() * 1000),
            imp.user_id,
            imp.query,
            tuple(Shown(s.block_id, s.position) for s in imp.shown),
            imp.session_id,
        )
    if kind == INTERACTION:
        return interaction_event(Interaction.model_validate_json(data))
    raise ValueError(f"unknown event kind {kind!r}")


def interaction_event(ev: Interaction) -> InteractionEvent:
    """The light form the operations are built from (and ``RequestContext.refusal`` checks)."""
    return InteractionEvent(
        ev.request_id,
        int(ev.ts.timestamp() * 1000),
        ev.user_id,
        ev.block_id,
        ev.position,
        ev.type.value,
        ev.dwell_ms,
        ev.event_id,
    )


@dataclass
class ConsumerStats:
    applied: int = 0
    acked: int = 0
    logs: int = 0  # entries that change no state ("served" features), acknowledged as read
    waiting: int = 0  # interactions whose impression has not arrived yet
    dead: int = 0
    reclaimed: int = 0
    retries: int = 0  # steps retried after a Redis timeout, lost connection or refusal (out of memory...)
    groups_created: int = 0  # the group was missing (NOGROUP) and was created again
    trimmed: int = 0  # events the stream's cap removed before they were applied (lost to live state)
    gaps: int = 0  # times the cap had trimmed past what the group read
    uncounted: int = 0  # gaps whose events Redis 6.2 could not count: ``trimmed`` is then a floor
    dead_letters_trimmed: int = 0  # older dead letters the cap removed to make room (their events lost)
    dead_reasons: list[str] = field(default_factory=list)


def is_nogroup(exc: redis.ResponseError) -> bool:
    return str(exc).startswith("NOGROUP")


# Errors the server gives every command alike, whatever the event. redis-py names some by class; the others
# stay a plain ResponseError with the code first, and Redis 6.2 wraps one raised inside a script in its own
# text ("Error running script ...: -OOM command not allowed ...").
_REFUSALS = (
    redis.exceptions.AskError,  # and MovedError: a slot moving again and again while a cluster reshards
    redis.exceptions.OutOfMemoryError,
    redis.exceptions.ReadOnlyError,
    redis.exceptions.ClusterDownError,
    redis.exceptions.TryAgainError,
)
_REFUSAL_CODES = re.compile(r"(?:^|-)(?:OOM|READONLY|BUSY|MASTERDOWN|NOREPLICAS|CLUSTERDOWN|TRYAGAIN) ")


def refused_by_server(exc: redis.ResponseError) -> bool:
    """Whether Redis refused for a state of its own that passes (out of memory, a replica or a cluster
    failing over or resharding, a script running long), not for anything in the event."""
    return isinstance(exc, _REFUSALS) or _REFUSAL_CODES.search(str(exc)) is not None


def waits_out(exc: BaseException) -> bool:
    """Whether a stream reader (``StreamConsumer.attempt``, the archive's export) waits ``exc`` out and
    tries again, with its group created again (a restarted Redis may have lost it: XGROUP CREATE of an
    existing group is a cheap BUSYGROUP) and a cluster client's map mended (``mend_cluster_map``):
    a slow, restarting or failing-over Redis (CLUSTERDOWN, redis-py's ClusterError once its redirections
    run out), or one refusing for now (out of memory, a replica, a busy script). Unacknowledged entries
    stay pending and are read again, and a refused apply wrote nothing, so a retry loses nothing, where
    dying would stop the live features and dead-lettering would drop events."""
    return isinstance(exc, TRANSIENT) or (isinstance(exc, redis.ResponseError) and refused_by_server(exc))


def read_entries(reply: list | dict | None) -> list[Entry]:
    """XREADGROUP's reply as entries. RESP2 answers a list of (stream, entries); RESP3 (a Redis URL with
    ``protocol=3``) a map of stream to a list holding the entries, which a reader taking the RESP2 shape
    iterated as keys and failed on."""
    if not reply:
        return []
    if isinstance(reply, dict):
        reply = [(name, got[0] if got and isinstance(got[0], list) else got) for name, got in reply.items()]
    return [(i, f) for _, entries in reply for i, f in entries]


def ensure_group(client: redis.Redis, stream: str, group: str) -> None:
    """Create ``group`` on ``stream`` (and the stream) reading from its first entry, unless it exists."""
    try:
        client.xgroup_create(stream, group, id="0", mkstream=True)
    except redis.ResponseError as exc:
        if "BUSYGROUP" not in str(exc):
            raise


@dataclass(frozen=True)
class GroupStatus:
    """What /readyz says about a consumer group: is someone consuming, and how far behind."""

    exists: bool
    consumers: int = 0
    live: int = 0  # consumers that read within the staleness limit
    idle_ms: int | None = None  # the most recent read by any consumer, ms ago
    pending: int = 0  # delivered, not yet acknowledged
    lag: int | None = None  # entries not yet delivered to the group (at least, when capped)
    gap: CapGap | None = None  # the stream's cap trimmed entries the group had not read


def group_status(
    client: redis.Redis, stream: str, group: str, *, stale_ms: int, lag_cap: int = 1000
) -> GroupStatus:
    """Liveness and lag of ``group`` from XINFO GROUPS / CONSUMERS and ``cap_gap`` (cheap calls).

    Redis 7 reports the lag itself; Redis 6.2 (the embedded server) does not, so the entries after the
    group's last delivered id are counted, up to ``lag_cap``.
    """
    groups = {_text(g["name"]): g for g in client.xinfo_groups(stream)} if client.exists(stream) else {}
    info = groups.get(group)
    if info is None:
        return GroupStatus(exists=False)
    consumers = client.xinfo_consumers(stream, group)
    idle = [int(c["idle"]) for c in consumers]
    gap = cap_gap(client, stream, group)
    # Redis 7.0's own lag is entries added less read, the gap's included; 7.4.2 and later say the length.
    lag = gap.unread if gap is not None else info.get("lag")
    if lag is None:
        last = _text(info["last-delivered-id"])
        lag = len(client.xrange(stream, min=f"({last}", max="+", count=lag_cap))
    return GroupStatus(
        exists=True,
        consumers=len(consumers),
        live=sum(i < stale_ms for i in idle),
        idle_ms=min(idle) if idle else None,
        pending=int(info["pending"]),
        lag=int(lag),
        gap=gap,
    )


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class StreamConsumer:
    def __init__(
        self, store: RedisFeatureStore, settings: FeatureStoreSettings, *, consumer: str | None = None
    ) -> None:
        self.store = store
        self.settings = settings
        self.consumer = consumer or default_consumer_name()
        self.client = store.client
        self.stream = store.keys.events_stream
        self.ops = OpBuilder(store.keys, settings)
        self.stats = ConsumerStats()
        self._next_claim = 0.0  # monotonic time of the next XAUTOCLAIM; the first step asks
        self._next_gap_look = 0.0  # and of the next look for a gap the stream's cap left (``take_gap``)
        self._lagging = False  # the last read of new events was a whole batch: look for a gap before each
        self._own_pending = True  # entries delivered to this consumer and not acknowledged may exist
        # The last error waited out, so that a full or lost Redis is named once, not once per try.
        self._trouble = ""
        self._grouped = False  # the group is known to exist (created, or found, since the last error)
        self._missing = False  # a step met NOGROUP: the next creation counts in ``groups_created``
        self._own_full = False  # the last read of own pending entries was a full batch

    def ensure_group(self) -> None:
        ensure_group(self.client, self.stream, GROUP)

    def step(self, *, block_ms: int = 0) -> int:
        """Process one batch: reclaimed, then own pending, then new events. Returns entries handled.

        A step that finds new events asks only for what can be there besides, every half claim interval
        (nothing is claimable before ``stream_claim_idle_ms`` anyway): a dead consumer's entries, and this
        consumer's own pending ones, which it also reads after a restart and after a failed step. An
        interaction left waiting for its impression is read again then, or on an idle step. The periodic
        own read also covers a read whose reply was lost but whose entries were delivered (redis-py may
        retry a timed-out read by itself). Asking all of them every step, with SCRIPT EXISTS before the
        apply, made six Redis round trips per live impression where three do (an interaction adds the read
        of its context). A step that finds nothing new asks every source: that costs no event any time,
        ``run(until_idle=True)`` still stops only when all are empty, and the non-blocking read keeps this
        consumer's idle time in XINFO CONSUMERS fresh (readiness reads it; on Redis 7.0 a blocking read that
        times out does not)."""
        try:
            return self._step(block_ms)
        except BaseException:
            # Entries may have been delivered and not acknowledged (a reply lost to a timeout, a failed
            # apply): the next step reads this consumer's own pending entries first.
            self._own_pending = True
            raise

    def _step(self, block_ms: int) -> int:
        batch = self.settings.stream_batch
        entries: list = []
        claimed = own = False
        now = time.monotonic()
        due = now >= self._next_claim
        # A gap the stream's cap left ahead of the group: looked for on the timed claims (not each re-claim
        # of a full batch), so also at start, and before each read of new events while they come in whole
        # batches (the consumer is behind, and the cap may be overtaking it); once a step at most.
        timed = due and now >= self._next_gap_look
        if timed:
            self._next_gap_look = now + self.settings.stream_claim_idle_ms / 2000
        if timed or self._lagging:
            take_gap(self.stats, self.client, self.stream, GROUP)
        if due:
            entries, claimed = self._claim(batch), True
        unread = self._own_pending or due  # own pending entries may exist and were not read this step
        if not entries and unread:
            entries, own, unread = self._own(batch), True, False
        if not entries:
            entries = self._read(">", batch, block_ms or None)
            self._lagging = len(entries) >= batch
            if not entries and not own:
                entries, own, unread = self._own(batch), True, False
            if not entries and not claimed:
                entries = self._claim(batch)
                unread = self._own_pending  # own entries were read above: set again only by 6.2's nils
        if entries:
            waiting = self.stats.waiting
            self._own_pending = True  # until acknowledged (see step)
            self._process(entries)
            # Pending still: own entries not read yet, or more of a full own batch. An interaction left
            # waiting for its impression is not read again at once: every read counts as a delivery, and
            # re-reading it each step sent it to the dead letters within milliseconds. It comes back with
            # the next idle step or the periodic own read, while new events (its impression among them)
            # are applied.
            more = own and self._own_full and self.stats.waiting == waiting
            self._own_pending = unread or more
        return len(entries)

    def _own(self, batch: int) -> list[Entry]:
        """This consumer's delivered, unacknowledged entries (after a restart, a failure, a wait), past any
        the stream's cap trimmed (acknowledged and counted)."""
        while True:
            got = self._read("0", batch, None)
            entries, lost = ack_trimmed(self.client, self.stream, GROUP, got)
            self._count_trimmed(lost)
            self._own_full = len(got) == batch  # more may follow, trimmed ones included
            if entries or not self._own_full:  # a whole batch trimmed: the next one is there to read
                break
        self._own_pending = bool(entries)
        return entries

    def _claim(self, batch: int) -> list:
        """Entries of consumers idle for ``stream_claim_idle_ms``, now this consumer's."""
        reply = self.client.xautoclaim(
            self.stream,
            GROUP,
            self.consumer,
            min_idle_time=self.settings.stream_claim_idle_ms,
            start_id="0-0",
            count=batch,
        )
        claimed, dropped, nils = claimed_entries(reply)
        self._count_trimmed(dropped)
        if nils:  # Redis 6.2's trimmed entries are this consumer's now: its own read acknowledges them
            self._own_pending = True
        # A full batch may leave more to claim: look again next step; else after half the idle time.
        full = len(reply[1]) + dropped >= batch
        self._next_claim = time.monotonic() + (0.0 if full else self.settings.stream_claim_idle_ms / 2000)
        self.stats.reclaimed += len(claimed)
        return claimed

    def _lost(self, **counts: int) -> None:
        """Events a cap took before they were applied (``features.losses``)."""
        losses.count(self.stats, self.client, self.stream, GROUP, **counts)

    def _count_trimmed(self, lost: int) -> None:
        """Live features missed these events: the consumer had fallen that far behind the stream's cap."""
        if lost:
            self._lost(trimmed=lost)
            log.warning("%d pending events were trimmed from %s by its cap, not applied", lost, self.stream)

    def run(
        self,
        *,
        until_idle: bool = False,
        block_ms: int = 1000,
        max_seconds: float | None = None,
        stop: threading.Event | None = None,
    ) -> ConsumerStats:
        started = time.monotonic()
        block_ms = block_ms_within_timeout(self.client, block_ms)
        while stop is None or not stop.is_set():
            # Checked first: a Redis that keeps refusing or timing out does not hold a bounded run past it.
            if max_seconds is not None and time.monotonic() - started > max_seconds:
                return self.stats
            handled = self.attempt(block_ms=0 if until_idle else block_ms)
            if handled is None:
                time.sleep(0.2)
            elif until_idle and handled == 0:
                return self.stats
        return self.stats

    def attempt(self, *, block_ms: int = 0) -> int | None:
        """``step`` (the group created first where it is not known to exist), or None when Redis could not
        take it now: the caller waits and tries again. Unacknowledged entries stay pending and are read
        again, so a retry loses nothing, where dying would stop the live features. Errors that waiting does
        not mend (a bug, a wrong type) are raised. The group is known to exist from one call to the next:
        after its stream was deleted, a step meets NOGROUP and the next call creates it again."""
        try:
            if not self._grouped:
                self.ensure_group()  # here: a Redis out of memory refuses XGROUP CREATE too, for a while
                self._grouped = True
                if self._missing:
                    self.stats.groups_created += 1
                    self._missing = False
            handled = self.step(block_ms=block_ms)
        except (*TRANSIENT, redis.ResponseError) as exc:
            if isinstance(exc, redis.ResponseError) and is_nogroup(exc):
                # The stream or its group was deleted: create it again, from the start.
                self._grouped, self._missing = False, True
                return None
            if not waits_out(exc):
                raise
            self._grouped = False
            mend_cluster_map(self.client, default_node=True)
            return self._wait_out(exc)
        self._trouble = ""
        return handled

    def _wait_out(self, exc: Exception) -> None:
        """Count a retry; name the trouble once, not once per try."""
        if repr(exc) != self._trouble:
            log.warning("Redis could not take the consumer's step, retrying: %r", exc)
        self._trouble = repr(exc)
        self.stats.retries += 1

    def _read(self, start: str, count: int, block: int | None) -> list:
        """Entries as read: a read of pending ones ("0") may hold trimmed ones without fields (``_own``)."""
        return read_entries(
            self.client.xreadgroup(GROUP, self.consumer, {self.stream: start}, count=count, block=block)
        )

    def _process(self, entries: list) -> None:
        parsed: list[tuple[bytes, ImpressionEvent | InteractionEvent]] = []
        done: list[bytes] = []
        payloads = dict(entries)  # each dead letter keeps its event, to publish again (features.dead_letters)
        for entry_id, fields in entries:
            try:
                event = to_event(fields[b"kind"].decode(), fields[b"data"].decode())
            except (KeyError, ValueError, ValidationError) as exc:
                self._dead(entry_id, fields, f"malformed event: {exc}")
                continue
            if event is None:
                done.append(entry_id)  # a log for the archive: nothing to apply, nothing to check
                self.stats.logs += 1
            else:
                parsed.append((entry_id, event))
        need = [e.request_id for _, e in parsed if isinstance(e, InteractionEvent)]
        contexts = self.store.contexts(list(dict.fromkeys(need))) if need else {}
        ready: list[tuple[str, list]] = []
        for entry_id, event in parsed:
            if isinstance(event, ImpressionEvent):
                contexts[event.request_id] = RequestContext.of(event)
                ready.append((event.event_id, self.ops.impression(event)))
            else:
                ctx = contexts.get(event.request_id)
                if ctx is None:
                    self._wait_or_dead(entry_id, event, payloads[entry_id])
                    continue
                refused = ctx.refusal(event)
                if refused is not None:
                    # /events checks this when the context is already stored; an event that came before
                    # its impression was applied is checked here, before it can write anything.
                    self._dead(entry_id, payloads[entry_id], f"{refused[0]}: {refused[1]}")
                    continue
                ready.append((event.event_id, self.ops.interaction(event, ctx)))
                ctx.note(event)
            done.append(entry_id)
        # Small chunks: a crash between chunks leaves some applied and unacknowledged, which redelivery
        # and the per-tag markers make harmless.
        failed: dict[str, dict[str, str]] = {}
        for i in range(0, len(ready), 32):
            try:
                self.stats.applied += self.store.apply(ready[i : i + 32])
            except ApplyError as exc:
                self.stats.applied += exc.applied
                failed.update(exc.failed)
        if failed:
            # Refused by the data in Redis, not by Redis: the same again on every delivery. The event's
            # other tags were applied and their context has moved on (a click noted on its request), so
            # the letter keeps the ops of the tags that failed, as computed now, for ``features
            # dead-letters --requeue`` to apply once the key is mended (the markers keep them once).
            ops = dict(ready)
            for entry_id, event in parsed:
                tags = failed.get(event.event_id)
                if tags is None or entry_id not in done:
                    continue
                kept = [op for op in ops[event.event_id] if self.store.keys.tag_of(op[1]) in tags]
                reason = "not applied: " + "; ".join(tags.values())
                self._dead(entry_id, payloads[entry_id], reason, (event.event_id, kept))
                done.remove(entry_id)
        if done:
            self.stats.acked += self.client.xack(self.stream, GROUP, *done)

    def _wait_or_dead(self, entry_id: bytes, event: InteractionEvent, fields: dict) -> None:
        info = self.client.xpending_range(self.stream, GROUP, min=entry_id, max=entry_id, count=1)
        deliveries = info[0]["times_delivered"] if info else 1
        waited_s = time.time() - int(_text(entry_id).split("-")[0]) / 1000  # ids begin with the ms added
        if (
            deliveries >= self.settings.stream_max_deliveries
            and waited_s >= self.settings.stream_impression_wait_s
        ):
            reason = (
                f"no impression: request {event.request_id!r} not seen in {deliveries} reads over "
                f"{waited_s:.1f} s"
            )
            self._dead(entry_id, fields, reason)
        else:
            self.stats.waiting += 1

    def _dead(
        self, entry_id: bytes, fields: dict | None, reason: str, ops: tuple[str, list] | None = None
    ) -> None:
        payload = {
            "entry": entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id),
            "reason": reason,
        }
        if ops is not None:  # (event id, the ops of the tags it failed on): what a requeue applies
            payload["event"], payload["ops"] = ops[0], json.dumps(ops[1])
        if fields:
            payload["fields"] = json.dumps(
                {k.decode(): v.decode(errors="replace") for k, v in fields.items()}
            )
        removed = dead_letters.add(self.store, payload, self.settings.dead_letters_max)
        if removed:
            self._lost(dead_letters_trimmed=removed)
            log.warning(
                "the dead-letter stream is at its cap (%d): %d older letter(s) removed, their events lost",
                self.settings.dead_letters_max,
                removed,
            )
        self.client.xack(self.stream, GROUP, entry_id)
        self.stats.dead += 1
        self.stats.dead_reasons.append(reason)
