"""User and block vectors in the Redis feature store.

Layout (one hash per entity, in the entity's hash tag, so it sits with the rest of that user's or block's
state on a cluster):

    Keys.user_vector(user_id)   -> {"v", "v1", ...: float16 little-endian bytes (dim * 2) in 64-byte chunks
                                    (features.packing.split_blob), "m": model version}
    Keys.block_vector(block_id) -> the same fields

The user's vector shares the user's one compact hash with the other per-user state; chunks keep every value
under Redis's 64-byte limit for compact hashes.

User vectors expire with the store's ``user_ttl_days`` like other per-user state; block vectors do not.
A user vector is only comparable with block vectors of the same model version: ``read_vectors`` marks
blocks of another version as absent.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence

import numpy as np

from features.definitions import VECTOR_DTYPE, VECTOR_FIELD, VERSION_FIELD
from features.embeddings.errors import VectorFormatError
from features.packing import chunk_fields, join_blob, split_blob
from features.store import FeatureStore, RedisFeatureStore

VECTOR_FIELDS = [*chunk_fields(VECTOR_FIELD), VERSION_FIELD]  # what to fetch for one vector
DTYPE = VECTOR_DTYPE


def encode_vector(vec: np.ndarray) -> bytes:
    return np.asarray(vec, dtype=np.float32).astype(DTYPE).tobytes()


def decode_vector(raw: bytes) -> np.ndarray:
    """float32 vector from stored float16 bytes."""
    if len(raw) % DTYPE.itemsize:
        raise VectorFormatError(f"a stored vector has {len(raw)} bytes, not a whole number of float16 values")
    return np.frombuffer(raw, dtype=DTYPE).astype(np.float32)


def refresh_state_key(store: RedisFeatureStore) -> str:
    """Where the time up to which user vectors are current is kept (JSON: version, until_ms)."""
    return f"{store.keys.prefix}:emb:m3:refreshed"


def write_vectors(
    store: RedisFeatureStore,
    version: str,
    *,
    users: Mapping[str, np.ndarray] | None = None,
    blocks: Mapping[str, np.ndarray] | None = None,
    chunk: int = 2000,
) -> int:
    """HSET one float16 vector and the model version per user and per block, pipelined in chunks (plain
    per-key commands, so it works on one server and on a cluster alike). Returns the number of keys."""
    keys = store.keys
    ttl = store.settings.user_ttl_days * 86_400
    pipe = store.client.pipeline(transaction=False)
    pending = written = 0
    # Blocks first: a server that sees a user vector of a new version then finds that version's blocks
    # (it loads them once per version, see RedisFeatureStore.block_vectors).
    items: list[tuple[str, np.ndarray, bool]] = [
        *((keys.block_vector(b), v, False) for b, v in (blocks or {}).items()),
        *((keys.user_vector(u), v, True) for u, v in (users or {}).items()),
    ]
    for key, vec, expires in items:
        pipe.hdel(key, *chunk_fields(VECTOR_FIELD))  # a model with fewer dims must not leave stale chunks
        pipe.hset(key, mapping={**split_blob(VECTOR_FIELD, encode_vector(vec)), VERSION_FIELD: version})
        if expires:
            pipe.expire(key, ttl)
        pending += 1
        if pending >= chunk:
            pipe.execute()
            written, pending = written + pending, 0
    if pending:
        pipe.execute()
        written += pending
    return written


def similarity_from_hashes(
    user_hash: Mapping[str, bytes], block_hashes: Sequence[Mapping[str, bytes]]
) -> tuple[np.ndarray, np.ndarray]:
    """(cosine (n,), present (n,)) from hashes already fetched with ``VECTOR_FIELDS`` (e.g. by
    ``RedisFeatureStore.fetch``); cosine is 0 where the user or the block vector is absent."""
    user_vec, block_mat, present = _decode(user_hash, block_hashes)
    return cosine(user_vec, block_mat, present), present


def read_vectors(
    store: FeatureStore, user_id: str, block_ids: Sequence[str]
) -> tuple[np.ndarray | None, np.ndarray, np.ndarray]:
    """The user's vector (None when absent), the blocks' vectors (n, D) float32 (zeros where absent) and a
    present mask (n,), in one pipelined round trip. With a user vector, a block counts as present only if
    it carries the same model version."""
    fields = VECTOR_FIELDS
    items = [
        (store.keys.user_vector(user_id), fields),
        *((store.keys.block_vector(b), fields) for b in block_ids),
    ]
    user_hash, *block_hashes = store.fetch(items)
    return _decode(user_hash, block_hashes)


def cosine(user_vec: np.ndarray | None, block_mat: np.ndarray, present: np.ndarray) -> np.ndarray:
    """(n,) cosine of the user vector with each present block vector; 0 elsewhere."""
    out = np.zeros(len(block_mat), dtype=np.float32)
    if user_vec is None or not present.any():
        return out
    norms = np.linalg.norm(block_mat, axis=1) * np.linalg.norm(user_vec)
    ok = present & (norms > 0)
    out[ok] = (block_mat[ok] @ user_vec) / norms[ok]
    return out


def _decode(
    user_hash: Mapping[str, bytes], block_hashes: Sequence[Mapping[str, bytes]]
) -> tuple[np.ndarray | None, np.ndarray, np.ndarray]:
    raw_user = join_blob(user_hash, VECTOR_FIELD)
    user_vec = decode_vector(raw_user) if raw_user is not None else None
    version = user_hash.get(VERSION_FIELD)
    dim = len(user_vec) if user_vec is not None else None
    vecs: list[np.ndarray | None] = []
    for h in block_hashes:
        raw = join_blob(h, VECTOR_FIELD)
        same_model = user_vec is None or h.get(VERSION_FIELD) == version
        vecs.append(decode_vector(raw) if raw is not None and same_model else None)
        if vecs[-1] is not None:
            dim = dim or len(vecs[-1])
            if len(vecs[-1]) != dim:
                raise VectorFormatError(f"block vectors of {len(vecs[-1])} and {dim} dims under one model")
    present = np.array([v is not None for v in vecs], dtype=bool)
    block_mat = np.zeros((len(vecs), dim or 0), dtype=np.float32)
    for i, v in enumerate(vecs):
        if v is not None:
            block_mat[i] = v
    return user_vec, block_mat, present


def write_refresh_state(store: RedisFeatureStore, version: str, until_ms: int) -> None:
    store.client.set(refresh_state_key(store), json.dumps({"version": version, "until_ms": int(until_ms)}))


def read_refresh_state(store: RedisFeatureStore) -> dict | None:
    raw = store.client.get(refresh_state_key(store))
    return json.loads(raw) if raw else None
