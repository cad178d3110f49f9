"""The dead letters: stream entries the consumer could not apply, each with its reason and its payload.

In: the store's dead-letter stream (written by ``features.stream.StreamConsumer``). Out: a count by kind of
reason (``summary``), and ``requeue``, which publishes the payloads of one kind again on the event stream
once the cause is mended (a key of another type removed, an impression that came late) and removes those
letters. A requeued event counts once on every hash tag: the tags it was applied on hold its marker.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass

from features.store import RedisFeatureStore

_PAGE = 1000


@dataclass(frozen=True)
class DeadLetter:
    entry: str  # the dead letter's own id
    event_entry: str  # the event's id on the event stream
    reason: str
    payload: dict[str, str] | None  # the event entry's fields (kind, data), to publish again

    @property
    def kind(self) -> str:
        """The reason's kind, the text before its first colon: "not applied", "no impression",
        "malformed event", or the field a refused click got wrong ("position", "block_id", "user_id")."""
        return self.reason.split(":", 1)[0]


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
    """Publish again the payload of every dead letter of ``kind`` and remove those letters; the number
    published. Letters without a payload (written before they kept one) stay."""
    chosen = [letter for letter in read(store) if letter.kind == kind and letter.payload]
    for lo in range(0, len(chosen), _PAGE):
        page = chosen[lo : lo + _PAGE]
        # Published before removed: a crash between the two leaves a letter whose event is on the stream
        # again, and requeueing it twice counts it once (the markers).
        store.republish([letter.payload for letter in page if letter.payload])
        store.client.xdel(store.keys.dead_letters, *(letter.entry for letter in page))
    return len(chosen)


def _letter(entry_id: bytes, fields: dict[bytes, bytes]) -> DeadLetter:
    text = {k.decode(): v.decode(errors="replace") for k, v in fields.items()}
    payload = json.loads(text["fields"]) if "fields" in text else None
    return DeadLetter(entry_id.decode(), text.get("entry", ""), text.get("reason", ""), payload)
