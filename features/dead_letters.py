"""The dead letters: stream entries the consumer could not apply, each with its reason and its payload.

In: the store's dead-letter stream (written by ``features.stream.StreamConsumer``). Out: a count by kind of
reason (``summary``), and ``requeue``, which sends the letters of one kind back once the cause is mended (a
key of another type removed, an impression that came late) and removes them. An event nothing was applied
of (no impression, refused, malformed) is published again on the event stream. One the store could not
apply on some hash tags ("not applied") was applied on the others, which moved on (its request context
noted the click), so its letter keeps the ops of the failed tags as computed then, and those are applied
directly. Either way an event counts once on every tag: the markers.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass

from features import losses
from features.ops import Op
from features.store import ApplyError, RedisFeatureStore

_PAGE = 1000
# A letter in and, at the cap, the oldest out, in one step: how many went is known exactly (an approximate
# MAXLEN trims whole nodes whenever it likes, and XADD does not say how many).
_ADD = """
local before = redis.call('XLEN', KEYS[1])
redis.call('XADD', KEYS[1], 'MAXLEN', ARGV[1], '*', unpack(ARGV, 2))
return before + 1 - redis.call('XLEN', KEYS[1])
"""


@dataclass(frozen=True)
class DeadLetter:
    entry: str  # the dead letter's own id
    event_entry: str  # the event's id on the event stream
    reason: str
    payload: dict[str, str] | None  # the event entry's fields (kind, data), to publish again
    ops: tuple[str, list[Op]] | None = None  # "not applied": (event id, the ops of the tags that failed)

    @property
    def kind(self) -> str:
        """The reason's kind, the text before its first colon: "not applied", "no impression",
        "malformed event", or the field a refused click got wrong ("position", "block_id", "user_id")."""
        return self.reason.split(":", 1)[0]


def add(store: RedisFeatureStore, letter: dict[str, str], keep: int) -> int:
    """Append ``letter`` to the dead-letter stream, keeping its newest ``keep`` (``dead_letters_max``);
    returns how many older letters that removed. Their events are lost: the caller counts them
    (``features.losses``), so they are not dropped unseen."""
    fields = [part for item in letter.items() for part in item]
    script = store.client.register_script(_ADD)
    return int(script(keys=[store.keys.dead_letters], args=[keep, *fields]))


def trimmed(store: RedisFeatureStore) -> int:
    """How many dead letters the cap has removed (their events lost) since the namespace was built."""
    lost = losses.totals(store.client, store.keys.events_stream)
    return sum(n for (_, what), n in lost.items() if what == "dead_letters_trimmed")


def read(store: RedisFeatureStore) -> list[DeadLetter]:
    """Every dead letter, oldest first."""
    letters: list[DeadLetter] = []
    start = "-"
    while page := store.client.xrange(store.keys.dead_letters, min=start, count=_PAGE):
        letters += [_letter(entry_id, fields) for entry_id, fields in page]
        start = "(" + letters[-1].entry
    return letters


def summary(store: RedisFeatureStore) -> dict[str, int]:
    """How many dead letters of each kind of reason, the most frequent first."""
    return dict(Counter(letter.kind for letter in read(store)).most_common())


def requeue(store: RedisFeatureStore, kind: str) -> int:
    """Send back every dead letter of ``kind`` (its ops applied, or its event published again) and remove
    those letters; the number sent. Letters with nothing to send (written before they kept their event)
    stay, and so do those whose ops the store refuses again (the cause is not mended yet)."""
    chosen = [letter for letter in read(store) if letter.kind == kind and (letter.ops or letter.payload)]
    sent = 0
    for lo in range(0, len(chosen), _PAGE):
        page = chosen[lo : lo + _PAGE]
        refused: set[str] = set()
        try:
            store.apply([letter.ops for letter in page if letter.ops])
        except ApplyError as exc:
            refused = set(exc.failed)
        store.republish([letter.payload for letter in page if not letter.ops and letter.payload])
        # Sent before removed: a crash between the two leaves a letter whose event was sent, and sending
        # it twice counts it once (the markers).
        done = [letter.entry for letter in page if not (letter.ops and letter.ops[0] in refused)]
        if done:
            store.client.xdel(store.keys.dead_letters, *done)
        sent += len(done)
    return sent


def _letter(entry_id: bytes, fields: dict[bytes, bytes]) -> DeadLetter:
    text = {k.decode(): v.decode(errors="replace") for k, v in fields.items()}
    payload = json.loads(text["fields"]) if "fields" in text else None
    ops = (text["event"], [tuple(op) for op in json.loads(text["ops"])]) if "ops" in text else None
    return DeadLetter(entry_id.decode(), text.get("entry", ""), text.get("reason", ""), payload, ops)
