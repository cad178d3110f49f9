"""What the stream's caps cost its readers: found, counted, and kept in Redis beside the stream.

Found: delivered entries the cap trimmed before they were acknowledged (``ack_trimmed``, ``claimed_entries``)
and gaps it left ahead of a group that had not read that far (``cap_gap``, ``take_gap``: skip_gap.lua).
Kept: counts from the readers (``features.stream.StreamConsumer``, ``features.archive.StreamArchiver``, the
dead letters' cap in ``features.dead_letters``). Out: the counts by reader group, lasting across restarts
and readable by any process: `smartblock features dead-letters` and every API worker's /metrics (the live
consumer usually runs in a process of its own, `features stream`, which serves no /metrics).

Fields of the hash are ``<group>:<what>``: ``trimmed`` (events the event stream's cap removed before the
group applied or archived them), ``dead_letters_trimmed`` (dead letters the dead-letter cap removed, each an
acknowledged event), ``gaps`` (times the cap had trimmed past the group's last read) and ``uncounted`` (those
whose events Redis 6.2 could not count: ``trimmed`` is then a floor).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from importlib import resources
from typing import Any

import redis

Entry = tuple[bytes, dict]  # a stream entry: id and fields
log = logging.getLogger("smartblock.features")


def losses_key(stream: str) -> str:
    return f"{stream}:lost"


def record(client: Any, stream: str, group: str, **counts: int) -> None:
    """Add ``counts`` (by what) to the group's lasting totals; nothing when all are zero. Best effort: the
    loss it counts has happened (acknowledged, skipped), so a Redis that refuses the count (out of memory,
    gone) costs the total, which the log line says, not the reader's step."""
    counts = {what: int(n) for what, n in counts.items() if n}
    if not counts:
        return
    pipe = client.pipeline(transaction=False)
    for what, n in counts.items():
        pipe.hincrby(losses_key(stream), f"{group}:{what}", n)
    try:
        pipe.execute()
    except (redis.RedisError, OSError) as exc:
        log.warning("could not keep what %s's cap cost group %r (%s): %r", stream, group, counts, exc)


def totals(client: Any, stream: str) -> dict[tuple[str, str], int]:
    """Every total kept for ``stream``, by (group, what); a field not of that form, or not a whole number
    (written by hand, say), is left out rather than failing a /metrics scrape."""
    out: dict[tuple[str, str], int] = {}
    for field, value in client.hgetall(losses_key(stream)).items():
        group, sep, what = _text(field).rpartition(":")
        if sep and group and _text(value).lstrip("-").isdigit():
            out[(group, what)] = int(value)
    return out


def count(stats: Any, client: Any, stream: str, group: str, **counts: int) -> None:
    """Add ``counts`` to a reader's run statistics (its fields of the same names) and to the lasting
    totals."""
    for what, n in counts.items():
        setattr(stats, what, getattr(stats, what) + int(n))
    record(client, stream, group, **counts)


def ack_trimmed(client: redis.Redis, stream: str, group: str, entries: list) -> tuple[list[Entry], int]:
    """A read of pending entries without those the stream's cap trimmed, and how many it trimmed.

    A delivered entry the cap trims before it is acknowledged stays pending, and a read of pending entries
    hands it back without fields: acknowledged here (or it would stay pending for ever) and counted by what
    XACK answers, so two readers meeting the same entry count it once."""
    gone = [i for i, f in entries if not f]
    lost = client.xack(stream, group, *gone) if gone else 0
    return [(i, f) for i, f in entries if f], lost


def claimed_entries(reply: list) -> tuple[list[Entry], int, bool]:
    """XAUTOCLAIM's reply as: the claimed entries that still hold their fields; how many trimmed entries
    Redis 7 dropped from the pending list itself (its reply's third element, counted as lost); and whether
    Redis 6.2 handed trimmed ones back as nils instead. Those are the claimer's pending entries now, with
    no id in the reply: a read of its own pending entries that reaches them acknowledges and counts them
    (``ack_trimmed``)."""
    entries = reply[1]
    dropped = len(reply[2]) if len(reply) > 2 else 0
    return [(i, f) for i, f in entries if f], dropped, any(i is None for i, _ in entries)


@dataclass(frozen=True)
class CapGap:
    """Entries the stream's cap trimmed before a group read them: lost to that group's readers."""

    after: str  # the group's last delivered id: the gap begins after it
    lost: int | None  # how many: Redis 7 counts them; Redis 6.2 cannot say
    unread: int  # entries of the stream still to read past the gap (the group's true lag)


_GAP_LUA = resources.files("features").joinpath("skip_gap.lua").read_text()


def cap_gap(client: redis.Redis, stream: str, group: str, *, take: bool = False) -> CapGap | None:
    """The gap the stream's cap left ahead of ``group``, if any (see skip_gap.lua): its last delivered id
    lies before the stream's first entry, or (Redis 7) it read past one before anyone looked. ``take``: move
    the group past it, so that its readers count each gap once between them and Redis 7's lag is right
    again; without, look only."""
    try:
        got = client.register_script(_GAP_LUA)(keys=[stream], args=[group, "take" if take else "look"])
    except redis.ResponseError as exc:
        if "no such key" in str(exc):  # the stream is gone: a reader meets NOGROUP next and starts again
            return None
        raise
    if not got:
        return None
    return CapGap(_text(got[0]), None if int(got[1]) < 0 else int(got[1]), int(got[2]))


def take_gap(stats: Any, client: redis.Redis, stream: str, group: str) -> None:
    """A reader's look for a gap ahead of its group (``cap_gap`` taking it): when found, logged and counted
    in the reader's ``stats`` and the lasting totals (``count``)."""
    gap = cap_gap(client, stream, group, take=True)
    if gap is None:
        return
    log.warning(
        "%s events were trimmed from %s by its cap before group %r read them (after %s): lost to it",
        "an unknown number of" if gap.lost is None else gap.lost,
        stream,
        group,
        gap.after,
    )
    count(stats, client, stream, group, trimmed=gap.lost or 0, gaps=1, uncounted=int(gap.lost is None))


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
