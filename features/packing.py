"""Compact binary values for per-user state, so a million users fit in well under half a gigabyte.

A user is one hash with short fields: ``r`` recent keyword interest, ``p`` long-term profile, ``v`` the M3
vector (float16) and ``m`` its model version. Keywords are stored as 32-bit hashes. The Python functions
here mirror, bit for bit, what the Redis script does to ``r`` (IEEE float32 values, float64 time), so the
offline replay and the live store hold identical bytes.
"""

from __future__ import annotations

import hashlib
import math
import struct
from array import array
from dataclasses import dataclass
from functools import lru_cache

RECENT_HEAD = struct.Struct("<d")  # reference time (s) that the values are decayed to
RECENT_ITEM = struct.Struct("<If")  # keyword hash, decayed count
PROFILE_HEAD = struct.Struct("<6BBI")  # genre shares (1/255), diversity (1/255), clicks
PROFILE_ITEM = struct.Struct("<IH")  # keyword hash, click share (1/65535)


@lru_cache(maxsize=1 << 18)  # query words and block ids repeat: the replay hashes each millions of times
def keyword_id(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8"), digest_size=4).digest(), "little")


def add_to_recent(
    last: float, items: dict[int, float], ids: list[int], ts_s: float, tau_s: float, cap: int
) -> tuple[float, dict[int, float]]:
    """Count ``ids`` once each at time ``ts_s`` into a decayed keyword tally (reference time, keyword hash ->
    count); keep the ``cap`` strongest.

    Values are decayed to the newest event time seen; an older (late) event adds its decayed weight. Counts
    are float32 values, as the packed tally (``pack_recent``) holds them, so a tally kept in memory packs to
    the bytes the store's Lua script (op ``t``) writes after the same steps.
    """
    if ts_s >= last:
        scale, add, last = math.exp(-(ts_s - last) / tau_s), 1.0, ts_s
    else:
        scale, add = 1.0, math.exp(-(last - ts_s) / tau_s)
    grown = {k: v * scale for k, v in items.items()}
    for kid in ids:
        grown[kid] = grown.get(kid, 0.0) + add
    # Rounded to float32 once for all (what packing stores), then ordered strongest first, ties by hash.
    # array("f") rounds each float64 with the C cast numpy's astype(float32) uses, without numpy's fixed
    # cost per call on a list of at most a few dozen values.
    stored = array("f", grown.values()).tolist()
    ranked = sorted(zip([-v for v in stored], grown, strict=True))[:cap]  # plain tuples: no key function
    return last, {k: -negated for negated, k in ranked}


def unpack_recent(blob: bytes) -> tuple[float, dict[int, float]]:
    (last,) = RECENT_HEAD.unpack_from(blob, 0)
    count = (len(blob) - RECENT_HEAD.size) // RECENT_ITEM.size
    return last, dict(
        RECENT_ITEM.iter_unpack(blob[RECENT_HEAD.size : RECENT_HEAD.size + count * RECENT_ITEM.size])
    )


def pack_recent(last: float, items: dict[int, float]) -> bytes:
    return RECENT_HEAD.pack(last) + b"".join(RECENT_ITEM.pack(k, v) for k, v in items.items())


def read_recent(blob: bytes | None, now_s: float, tau_s: float) -> dict[int, float]:
    """Keyword hash -> interest decayed to ``now_s``."""
    if not blob:
        return {}
    last, items = unpack_recent(blob)
    decay = math.exp(-max(now_s - last, 0.0) / tau_s)
    return {kid: value * decay for kid, value in items.items()}


@dataclass(frozen=True)
class Profile:
    genre_share: tuple[float, ...]  # per genre
    diversity: float
    clicks: int
    keyword_share: dict[int, float]  # keyword hash -> share of the user's clicked keywords


def pack_profile(
    genre_share: list[float], diversity: float, clicks: int, keywords: list[tuple[str, float]]
) -> bytes:
    head = PROFILE_HEAD.pack(
        *(min(255, round(g * 255)) for g in genre_share),
        min(255, round(diversity * 255)),
        min(clicks, 2**32 - 1),
    )
    return head + b"".join(
        PROFILE_ITEM.pack(keyword_id(k), min(65535, round(s * 65535))) for k, s in keywords
    )


def unpack_profile(blob: bytes) -> Profile:
    *genres, div, clicks = PROFILE_HEAD.unpack_from(blob, 0)
    words = {}
    for j in range((len(blob) - PROFILE_HEAD.size) // PROFILE_ITEM.size):
        kid, share = PROFILE_ITEM.unpack_from(blob, PROFILE_HEAD.size + j * PROFILE_ITEM.size)
        words[kid] = share / 65535
    return Profile(tuple(g / 255 for g in genres), div / 255, clicks, words)


LIFT_ITEM = struct.Struct("<IH")  # intent key, lift / LIFT_MAX (1/65535)
OVERALL_LIFT_KEY = 0  # the item holding the user's lift over all intents (intent keys are 32-bit hashes)
LIFT_MAX = 4.0  # lifts above are stored as this (a 4x taste is already the simulator's and a reader's edge)


def pack_lifts(lifts: list[tuple[int, float]]) -> bytes:
    """Intent lifts (key, lift >= 0) as fixed-point items: 6 bytes each."""
    return b"".join(
        LIFT_ITEM.pack(key, min(65535, round(min(max(v, 0.0), LIFT_MAX) / LIFT_MAX * 65535)))
        for key, v in lifts
    )


def unpack_lifts(blob: bytes | None) -> dict[int, float]:
    if not blob:
        return {}
    return {
        key: q / 65535 * LIFT_MAX
        for key, q in (
            LIFT_ITEM.unpack_from(blob, j) for j in range(0, len(blob) - LIFT_ITEM.size + 1, LIFT_ITEM.size)
        )
    }


# Redis keeps a small hash compact (listpack) only while every value fits in 64 bytes, so longer blobs are
# stored as numbered chunks: name, name1, name2, ...
CHUNK_BYTES = 64
MAX_CHUNKS = 4


def chunk_fields(name: str) -> list[str]:
    return [name] + [f"{name}{i}" for i in range(1, MAX_CHUNKS)]


def split_blob(name: str, blob: bytes) -> dict[str, bytes]:
    parts = [blob[i : i + CHUNK_BYTES] for i in range(0, len(blob), CHUNK_BYTES)] or [b""]
    if len(parts) > MAX_CHUNKS:
        raise ValueError(f"{name}: {len(blob)} bytes need more than {MAX_CHUNKS} chunks")
    return dict(zip(chunk_fields(name), parts, strict=False))


def whole_blob(name: str, blob: bytes) -> dict[str, bytes]:
    """The blob's chunk fields with the unused ones empty: a user hash is updated field by field, so a
    shorter blob than the last one must overwrite the chunks it no longer fills."""
    return {f: b"" for f in chunk_fields(name)} | split_blob(name, blob)


def join_blob(fields: dict, name: str) -> bytes | None:
    if name not in fields:
        return None
    return b"".join(fields[f] for f in chunk_fields(name) if f in fields)


def pack_vector(values: list[float]) -> bytes:
    """Counters kept together as packed float64, so one field holds a block's stats (op ``v`` adds to it)."""
    return struct.pack(f"<{len(values)}d", *values)
