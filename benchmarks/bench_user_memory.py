"""Online memory per user: every per-user field at its configured cap, in a real Redis.

    python benchmarks/bench_user_memory.py [--world /tmp/large] [--users 100000] [--json]

Fills, for N users (the world's population with ``--world``, else ids of the population's format), every
piece of per-user online state through the project's own writers:

- live state (user hash ``r`` recent query keywords and ``c`` recent clicks; the session hash ``r``, ``c``,
  ``e`` shown blocks and ``_`` counters): searches and clicks replayed by ``features.replay.Replayer`` (the
  ``OpBuilder`` ops, the same bytes the stream's Lua script writes) and written as ``features build`` writes
  them, with their expiries;
- the daily batch (user hash ``p`` profile, ``l`` intent lifts): ``pack_profile`` / ``pack_lifts`` into a
  ``Snapshot`` written by ``RedisFeatureStore.write_snapshot``;
- M3 (user hash ``v`` vector, ``m`` model version): ``features.embeddings.store.write_vectors``.

One session per user is alive (a user searching now). Then it sums ``MEMORY USAGE`` over every key of the
namespace (SCAN) and takes the ``INFO used_memory`` delta, each divided by the users, and breaks the user and
session hashes down by field: the payload (the values' bytes) and what each field costs inside the hash's
listpack (field name, value, entry headers); the rest of a key (object header, dict entry, key name, listpack
header, allocator rounding) is reported as key overhead. A request's context hash (``ctx``, kept
``request_ttl_hours`` after each search) and the applied-event markers of the stream path are per request and
per event, not per user: they are measured on a sample and reported apart.

Uses REDIS_URL, else the Redis on 127.0.0.1:6379 when it answers, else the embedded one. Writes under its own
namespace (``--namespace``; two characters by default, as long as the default ``sb``, since the key name is
part of each key's memory), refuses a namespace that already holds keys, and deletes it afterwards. Other
clients writing to the same server at the same time blur the ``INFO`` delta, not ``MEMORY USAGE``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import shutil
import signal
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import redis

from data.layout import DataLayout
from data.world.scales import SCALES
from features.batch import Snapshot
from features.block_attributes import intent_label, intent_profile_id, tokens
from features.config import FeatureStoreSettings
from features.embedded import server_pid
from features.embeddings.config import EmbeddingSettings
from features.embeddings.store import write_vectors
from features.ops import LIFT_FIELD, ImpressionEvent, InteractionEvent, OpBuilder, RequestContext, Shown
from features.packing import OVERALL_LIFT_KEY, pack_lifts, pack_profile, whole_blob
from features.replay import Replayer
from features.store import RedisFeatureStore

PAGE = 8  # blocks a search shows (the world's page size)
WORDS_PER_SEARCH = 5
SYNTHETIC_BLOCKS = 241_920  # the large world's catalogue size, for ids when no world is given
KINDS = {"u": "user", "s": "session", "ctx": "request context"}


@dataclass(frozen=True)
class Vocabulary:
    """What the users' state is made of: real catalogue words, blocks and intents with ``--world``."""

    user_ids: list[str]
    block_ids: list[str]
    words: list[str]  # query tokens
    phrases: list[str]  # keyword phrases (long-term profile)
    intents: list[str]  # intent labels

    @classmethod
    def from_world(cls, root: Path, n_users: int | None) -> Vocabulary:
        layout = DataLayout(root)
        users = pq.read_table(layout.truth / "users.parquet", columns=["user_id"])["user_id"].to_pylist()
        blocks = pq.read_table(layout.table_file("blocks"), columns=["id", "keywords"])
        keywords = blocks["keywords"].to_pylist()
        phrases = sorted({kw for kws in keywords for kw in kws})
        return cls(
            user_ids=users[:n_users] if n_users else users,
            block_ids=blocks["id"].to_pylist(),
            words=sorted({t for kw in phrases for t in tokens(kw)}),
            phrases=phrases,
            intents=sorted({intent_label(kws) for kws in keywords} - {""}),
        )

    @classmethod
    def synthetic(cls, n_users: int) -> Vocabulary:
        # Ids in the world's formats (data.world.population.Population.user_ids, the catalogue's block ids).
        return cls(
            user_ids=[f"u{i:06d}" for i in range(n_users)],
            block_ids=[f"b{i:06d}" for i in range(SYNTHETIC_BLOCKS)],
            words=[f"word{i}" for i in range(5000)],
            phrases=[f"word{i} word{i + 1}" for i in range(0, 5000, 2)],
            intents=[f"intent {i}" for i in range(100)],
        )


def connect(namespace: str, embedded_dir: Path, caps: dict[str, str]) -> RedisFeatureStore:
    common = {"namespace": namespace, "socket_timeout_s": 30, **caps}
    if os.environ.get("REDIS_URL"):
        return RedisFeatureStore.connect(FeatureStoreSettings(redis_url=os.environ["REDIS_URL"], **common))
    try:
        redis.Redis(host="127.0.0.1", port=6379, socket_connect_timeout=0.3).ping()
        url = "redis://127.0.0.1:6379/0"
        return RedisFeatureStore.connect(FeatureStoreSettings(redis_url=url, **common))
    except (redis.RedisError, OSError):
        return RedisFeatureStore.connect(FeatureStoreSettings(embedded_dir=embedded_dir, **common))


# -- filling ------------------------------------------------------------------------------------------------
def searches_needed(settings: FeatureStoreSettings) -> tuple[int, int]:
    """(searches, clicks per search) that fill the user's and the session's keyword, click and shown caps."""
    searches = math.ceil(
        max(
            settings.recent_keywords / WORDS_PER_SEARCH,
            settings.session_shown_blocks / PAGE,
            settings.recent_keywords / PAGE,
        )
    )
    return searches, math.ceil(settings.recent_keywords / searches)


def fill_live(
    store: RedisFeatureStore, vocab: Vocabulary, users: list[str], first: int, t0_ms: int, seed: int
) -> tuple[int, dict[str, dict]]:
    """Replay each user's searches and clicks (one session each) and write the user and session hashes as
    ``features build`` does. Returns (events, the request contexts the replay made, unwritten)."""
    rng = random.Random(seed)
    settings = store.settings
    searches, clicks = searches_needed(settings)
    replayer = Replayer(settings, store.keys)
    for i, user in enumerate(users, start=first):
        session = f"s999-{i:06d}"
        words = rng.sample(vocab.words, searches * WORDS_PER_SEARCH)
        blocks = [vocab.block_ids[j] for j in rng.sample(range(len(vocab.block_ids)), searches * PAGE)]
        for s in range(searches):
            request = f"r999-{i * searches + s:07d}"
            ts = t0_ms + s * 60_000
            shown = tuple(Shown(b, p + 1) for p, b in enumerate(blocks[s * PAGE : (s + 1) * PAGE]))
            query = " ".join(words[s * WORDS_PER_SEARCH : (s + 1) * WORDS_PER_SEARCH])
            replayer.apply(ImpressionEvent(request, ts, user, query, shown, session))
            for c in range(clicks):
                pos = shown[c]
                replayer.apply(
                    InteractionEvent(request, ts + 5_000 * (c + 1), user, pos.block_id, pos.position, "click")
                )
    state = replayer.state
    as_of = (t0_ms + searches * 60_000) / 1000
    mine, contexts = {}, {}
    for key, fields in state.export():
        kind = key_kind(key)
        if kind in ("u", "s"):
            mine[key] = fields
        elif kind == "ctx":
            contexts[key] = fields
    store.write_hashes(mine, replace=False, ttl_s={k: state.expire_at[k] - as_of for k in mine})
    return replayer.events, {k: (v, state.expire_at[k] - as_of) for k, v in contexts.items()}


def fill_batch(store: RedisFeatureStore, vocab: Vocabulary, users: list[str], seed: int) -> None:
    """Each user's long-term profile (keywords and intents at their caps) and intent lifts (at the cap), as
    the daily batch packs and writes them."""
    rng = np.random.default_rng(seed)
    pick = random.Random(seed)
    s = store.settings
    snapshot = Snapshot()
    for user in users:
        genres = rng.dirichlet(np.ones(6))
        shares = np.sort(rng.dirichlet(np.ones(s.user_keywords + s.user_intents)))[::-1]
        items = [
            *pick.sample(vocab.phrases, s.user_keywords),
            *(f"intent:{label}" for label in pick.sample(vocab.intents, s.user_intents)),
        ]
        profile = pack_profile(
            list(genres),
            float(rng.uniform()),
            int(rng.integers(50, 5000)),
            list(zip(items, shares.tolist(), strict=True)),
        )
        lifts = [(OVERALL_LIFT_KEY, float(rng.uniform(0.5, 2)))] + [
            (intent_profile_id(label), float(rng.lognormal(0, 0.5)))
            for label in pick.sample(vocab.intents, s.user_intent_lifts)
        ]
        snapshot.user[store.keys.user(user)] = whole_blob("p", profile) | whole_blob(
            LIFT_FIELD, pack_lifts(lifts)
        )
    store.write_snapshot(snapshot)


def fill_vectors(store: RedisFeatureStore, users: list[str], dim: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    version = f"m3-{rng.bytes(6).hex()}"  # the format of features.embeddings.persist versions
    vecs = rng.standard_normal((len(users), dim)).astype(np.float32)
    write_vectors(store, version, users=dict(zip(users, vecs, strict=True)))


# -- measuring ----------------------------------------------------------------------------------------------
def _lp_int(raw: bytes) -> int | None:
    """The integer a listpack stores a string as (lpStringToInt64: canonical decimal only), else None."""
    if not raw or len(raw) > 20:
        return None
    try:
        text = raw.decode("ascii")
        value = int(text)
    except (UnicodeDecodeError, ValueError):
        return None
    return value if str(value) == text else None


def listpack_entry_bytes(raw: bytes) -> int:
    """Bytes one element takes in a Redis 7 listpack: encoding header, data, back-length (listpack.c)."""
    value = _lp_int(raw)
    if value is not None:
        if 0 <= value <= 127:
            size = 1
        elif -4096 <= value <= 4095:
            size = 2
        elif -(2**15) <= value < 2**15:
            size = 3
        elif -(2**23) <= value < 2**23:
            size = 4
        elif -(2**31) <= value < 2**31:
            size = 5
        else:
            size = 9
    else:
        size = len(raw) + (1 if len(raw) < 64 else 2 if len(raw) < 4096 else 5)
    return size + (1 if size <= 127 else 2 if size < 16383 else 3)


def field_group(name: str) -> str:
    """The stored field a hash field belongs to: chunks ``r``, ``r1``, ``r2`` are all ``r``."""
    return name.rstrip("0123456789") or name


def key_kind(key: str) -> str:
    """``u``, ``s``, ``ctx``, ... from the key's last part; ``seen`` for an applied-event marker."""
    return "seen" if ":seen:" in key else key.rsplit(":", 1)[1]


def scan_usage(client: redis.Redis, prefix: str) -> dict[str, list[tuple[str, int]]]:
    """Key kind -> [(key, MEMORY USAGE with every field counted)] over the namespace."""
    keys = [k.decode() for k in client.scan_iter(match=f"{prefix}:*", count=2000)]
    out: dict[str, list[tuple[str, int]]] = defaultdict(list)
    for lo in range(0, len(keys), 2000):
        pipe = client.pipeline(transaction=False)
        chunk = keys[lo : lo + 2000]
        for k in chunk:
            pipe.memory_usage(k, samples=0)
        for k, used in zip(chunk, pipe.execute(), strict=True):
            out[key_kind(k)].append((k, int(used or 0)))
    return out


def breakdown(client: redis.Redis, keys: list[str]) -> dict:
    """Per field of the sampled hashes: chunks, payload bytes, listpack bytes; and the hashes' encodings."""
    pipe = client.pipeline(transaction=False)
    for k in keys:
        pipe.hgetall(k)
        pipe.object("encoding", k)
        pipe.memory_usage(k, samples=0)
    got = pipe.execute()
    fields: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    encodings: dict[str, int] = defaultdict(int)
    usage = name_bytes = 0
    for h, encoding, used in zip(got[::3], got[1::3], got[2::3], strict=True):
        encodings[encoding.decode() if isinstance(encoding, bytes) else str(encoding)] += 1
        usage += int(used)
        for name, value in h.items():
            g = fields[field_group(name.decode())]
            g["chunks"] += 1
            g["payload"] += len(value)
            g["names"] += len(name)
            g["listpack"] += listpack_entry_bytes(name) + listpack_entry_bytes(value)
    n = max(len(keys), 1)
    per_field = {f: {k: round(v / n, 1) for k, v in g.items()} for f, g in sorted(fields.items())}
    listpack = sum(g["listpack"] for g in per_field.values())
    name_bytes = sum(len(k) for k in keys) / n
    return {
        "sampled": len(keys),
        "encodings": dict(encodings),
        "fields": per_field,
        "payload": round(sum(g["payload"] for g in per_field.values()), 1),
        "listpack_entries": round(listpack, 1),
        "memory_usage": round(usage / n, 1),
        "key_overhead": round(usage / n - listpack, 1),
        "key_name": round(name_bytes, 1),
    }


def measure_contexts(store: RedisFeatureStore, contexts: dict[str, tuple[dict, float]], n: int) -> dict:
    """Write ``n`` request contexts as ``features build`` would and take their memory per request."""
    sample = dict(list(contexts.items())[:n])
    store.write_hashes(
        {k: h for k, (h, _) in sample.items()}, replace=False, ttl_s={k: t for k, (_, t) in sample.items()}
    )
    info = breakdown(store.client, list(sample))
    store.client.delete(*sample)
    return info


def measure_markers(store: RedisFeatureStore, vocab: Vocabulary, users: int, t0_ms: int) -> dict:
    """The stream path's applied-event markers (``seen:*``, one per event per hash tag it touches, kept
    ``dedup_ttl_hours``): a few users' events applied through ``RedisFeatureStore.apply`` in a namespace of
    their own, memory per event."""
    settings = store.settings.model_copy(update={"namespace": f"{store.settings.namespace}x"})
    side = RedisFeatureStore(store.client, settings)
    if next(iter(side.client.scan_iter(match=f"{side.keys.prefix}:*", count=100)), None) is not None:
        return {"skipped": f"namespace {settings.namespace!r} holds keys"}
    try:
        rng = random.Random(1)
        searches, clicks = searches_needed(settings)
        ops = OpBuilder(side.keys, settings)
        events = 0
        for i in range(users):
            user, session = vocab.user_ids[i], f"s999-{i:06d}"
            words = rng.sample(vocab.words, searches * WORDS_PER_SEARCH)
            blocks = [vocab.block_ids[j] for j in rng.sample(range(len(vocab.block_ids)), searches * PAGE)]
            for s in range(searches):
                request = f"r999-{i * searches + s:07d}"
                ts = t0_ms + s * 60_000
                shown = tuple(Shown(b, p + 1) for p, b in enumerate(blocks[s * PAGE : (s + 1) * PAGE]))
                query = " ".join(words[s * WORDS_PER_SEARCH : (s + 1) * WORDS_PER_SEARCH])
                imp = ImpressionEvent(request, ts, user, query, shown, session)
                side.apply([(imp.event_id, ops.impression(imp))])
                ctx = RequestContext.of(imp)
                events += 1
                for c in range(clicks):
                    ev = InteractionEvent(
                        request, ts + 5_000 * (c + 1), user, shown[c].block_id, c + 1, "click"
                    )
                    side.apply([(ev.event_id, ops.interaction(ev, ctx))])
                    ctx.note(ev)
                    events += 1
        usage = scan_usage(side.client, side.keys.prefix)
        markers = [u for kind, rows in usage.items() if kind == "seen" for _, u in rows]
        return {
            "events": events,
            "markers": len(markers),
            "markers_per_event": round(len(markers) / events, 2),
            "bytes_per_event": round(sum(markers) / events, 1),
        }
    finally:
        side.clear()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--world", type=Path, help="A generated world: its users, blocks and words.")
    parser.add_argument(
        "--users", type=int, help="Users to fill (default: the world's, else the large scale's)."
    )
    parser.add_argument("--namespace", default="bm", help="Key namespace of this run (must be empty).")
    parser.add_argument("--batch", type=int, default=5000, help="Users replayed and written at a time.")
    parser.add_argument("--sample", type=int, default=2000, help="Hashes read for the per-field table.")
    parser.add_argument("--marker-users", type=int, default=200, help="Users sent through the stream path.")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="Another value of a feature-store setting, e.g. --set user_intent_lifts=16 (what-if caps).",
    )
    parser.add_argument("--dim", type=int, default=EmbeddingSettings().dim, help="M3 vector width.")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true", help="Print the report as JSON only.")
    args = parser.parse_args()

    started = time.perf_counter()
    if args.world:
        vocab = Vocabulary.from_world(args.world, args.users)
    else:
        vocab = Vocabulary.synthetic(args.users or SCALES["large"].users)
    users = vocab.user_ids
    embedded_dir = Path(tempfile.mkdtemp(prefix="bench-mem-redis-"))
    caps = dict(item.split("=", 1) for item in args.set)
    store = connect(args.namespace, embedded_dir, caps)
    client = store.client
    if next(iter(client.scan_iter(match=f"{store.keys.prefix}:*", count=100)), None) is not None:
        raise SystemExit(f"namespace {args.namespace!r} already holds keys; pick another --namespace")
    t0_ms = 1_772_236_800_000  # 2026-02-28: any time works, the TTLs run from the last event
    report: dict = {
        "redis": store.settings.redis_url or "embedded",
        "redis_version": client.info("server")["redis_version"],
        "hash_max_listpack": {k: v for k, v in client.config_get("hash-max-listpack-*").items()},
        "users": len(users),
        "world": str(args.world) if args.world else None,
        "caps": {
            "recent_keywords": store.settings.recent_keywords,
            "user_keywords": store.settings.user_keywords,
            "user_intents": store.settings.user_intents,
            "user_intent_lifts": store.settings.user_intent_lifts,
            "session_shown_blocks": store.settings.session_shown_blocks,
            "m3_dim": args.dim,
        },
    }
    try:
        before = client.info("memory")["used_memory"]
        events, contexts = 0, {}
        for lo in range(0, len(users), args.batch):
            n, ctx = fill_live(store, vocab, users[lo : lo + args.batch], lo, t0_ms, args.seed + lo)
            events += n
            contexts = contexts or ctx
        filled_live = time.perf_counter()
        for lo in range(0, len(users), args.batch):
            fill_batch(store, vocab, users[lo : lo + args.batch], args.seed + lo)
        fill_vectors(store, users, args.dim, args.seed)
        filled = time.perf_counter()
        used = client.info("memory")["used_memory"] - before
        usage = scan_usage(client, store.keys.prefix)
        total = sum(u for rows in usage.values() for _, u in rows)
        report["fill_seconds"] = {
            "live": round(filled_live - started, 1),
            "batch_m3": round(filled - filled_live, 1),
        }
        report["events_replayed"] = events
        report["keys"] = {KINDS.get(k, k): len(rows) for k, rows in usage.items()}
        report["memory_usage_per_user"] = round(total / len(users), 1)
        report["used_memory_delta_per_user"] = round(used / len(users), 1)
        report["gb_per_million_users"] = {
            "memory_usage": round(total / len(users) * 1e6 / 1e9, 3),
            "used_memory_delta": round(used / len(users) * 1e6 / 1e9, 3),
        }
        report["by_kind"] = {}
        for kind, rows in sorted(usage.items()):
            sample = [k for k, _ in rows[: args.sample]]
            report["by_kind"][KINDS.get(kind, kind)] = {
                "keys": len(rows),
                "memory_usage_per_user": round(sum(u for _, u in rows) / len(users), 1),
                **breakdown(client, sample),
            }
        report["per_request_context"] = measure_contexts(store, contexts, args.sample)
        if args.marker_users:
            report["stream_markers"] = measure_markers(store, vocab, args.marker_users, t0_ms)
    finally:
        store.clear()
        pid = server_pid(embedded_dir)
        if pid is not None:
            os.kill(pid, signal.SIGTERM)
        shutil.rmtree(embedded_dir, ignore_errors=True)
    report["seconds"] = round(time.perf_counter() - started, 1)
    if args.json:
        print(json.dumps(report, indent=2))
        return
    print_table(report)


def print_table(report: dict) -> None:
    print(f"redis {report['redis_version']} at {report['redis']}, {report['users']:,} users")
    print(f"caps {report['caps']}")
    print(f"{'kind':<16}{'field':<8}{'chunks':>7}{'payload B':>11}{'in hash B':>11}")
    for kind, info in report["by_kind"].items():
        for name, f in info["fields"].items():
            print(f"{kind:<16}{name:<8}{f['chunks']:>7.0f}{f['payload']:>11.1f}{f['listpack']:>11.1f}")
        print(f"{kind:<16}{'(key)':<8}{'':>7}{'':>11}{info['key_overhead']:>11.1f}")
        print(
            f"{kind:<16}{'total':<8}{'':>7}{info['payload']:>11.1f}{info['memory_usage']:>11.1f}"
            f"   x {info['keys']:,} keys, {info['encodings']}"
        )
    ctx = report["per_request_context"]
    print(f"per request: context hash {ctx['memory_usage']:.1f} B (payload {ctx['payload']:.1f} B)")
    if "stream_markers" in report:
        print(f"per event (stream path): applied-event markers {report['stream_markers']}")
    gb = report["gb_per_million_users"]
    print(
        f"per user: MEMORY USAGE {report['memory_usage_per_user']:.1f} B = {gb['memory_usage']:.3f} GB per "
        f"million; INFO used_memory delta {report['used_memory_delta_per_user']:.1f} B = "
        f"{gb['used_memory_delta']:.3f} GB per million ({report['seconds']} s)"
    )


if __name__ == "__main__":
    main()
