"""Index encoding sharded over the engine's workers (``data.engine``): passages in, rows out, in order.

The passages are cut into contiguous shards, one Dask task each. A task is a pure function of its shard and
the encoder's settings: it takes the worker process's encoder for those settings (loaded on the worker's
first task and kept in ``_WORKER_ENCODERS``, so a worker loads each encoder once), encodes the shard on one
thread, and returns the rows with its process id. A shard that a lost worker had started runs again
elsewhere and gives the same rows. The rows are put back in passage order, so the index is the one the
single-process path (``TransformerEncoder._encode_batches``, the reference) builds: with int8 weights (the
default) every passage is encoded alone either way and the rows are equal; in fp32 batches are formed
within a shard, so float rows may differ by padding round-off (about 1e-6).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from data.days import Progress

if TYPE_CHECKING:
    from distributed import Client

    from retrieval.encoders.backend import TransformerEncoder

# Passages per task, at most: a few seconds of work, so progress moves and a busy worker does not hold the
# tail. Fewer passages are cut into SHARDS_PER_THREAD shards per worker thread (of MIN_SHARD at least), so
# every worker gets a share.
SHARD_SIZE = 256
SHARDS_PER_THREAD = 4
MIN_SHARD = 16

# In each worker process: the encoder of each (class, settings, ONNX cache), loaded once.
_WORKER_ENCODERS: dict[tuple[str, str, str], TransformerEncoder] = {}


@dataclass(frozen=True)
class EncoderSpec:
    """What a worker needs to make the same encoder (pickled to it; the loaded model never travels)."""

    encoder_class: type[TransformerEncoder]
    settings: Any  # SpladeSettings | DenseSettings
    onnx_cache_dir: Path | None

    @classmethod
    def of(cls, encoder: TransformerEncoder) -> EncoderSpec:
        return cls(type(encoder), encoder.settings, encoder.onnx_cache_dir)

    def key(self) -> tuple[str, str, str]:
        name = f"{self.encoder_class.__module__}.{self.encoder_class.__qualname__}"
        return name, self.settings.model_dump_json(), str(self.onnx_cache_dir)


@dataclass
class ShardedEncoding:
    """The rows of every passage in order (SPLADE: sparse dicts; dense: an (N, H) array), and per shard the
    id of the process that encoded it."""

    rows: list[dict[str, int]] | np.ndarray
    pids: list[int]


def worker_encoder(spec: EncoderSpec) -> TransformerEncoder:
    """This process's encoder for ``spec``: one query thread, one index thread, no query cache."""
    key = spec.key()
    encoder = _WORKER_ENCODERS.get(key)
    if encoder is None:
        encoder = spec.encoder_class(
            spec.settings, cache_size=0, threads=1, index_threads=1, onnx_cache_dir=spec.onnx_cache_dir
        ).load()
        _WORKER_ENCODERS[key] = encoder
    return encoder


def encode_shard(spec: EncoderSpec, texts: list[str]) -> tuple[int, list[dict[str, int]] | np.ndarray]:
    """A task: (this worker's pid, the rows of ``texts`` in order)."""
    return os.getpid(), worker_encoder(spec).encode_documents(texts)  # type: ignore[attr-defined]


def default_shard_size(passages: int, threads: int) -> int:
    """Passages per shard: at most SHARD_SIZE, and small enough to give each worker thread a few shards."""
    per_thread = -(-passages // max(threads * SHARDS_PER_THREAD, 1))  # ceil
    return max(min(SHARD_SIZE, per_thread), MIN_SHARD)


def encode_on_engine(
    client: Client,
    encoder: TransformerEncoder,
    texts: list[str],
    *,
    shard_size: int | None = None,
    progress: Progress | None = None,
    label: str = "encode",
) -> ShardedEncoding:
    """Encode ``texts`` as ``encoder`` would, in shards on ``client``'s workers; rows in the order of texts.

    The encoder's ONNX graph must already be in its cache (loading ``encoder`` here exports it on a miss),
    so workers only read it. ``shard_size`` None: ``default_shard_size`` for the cluster's threads.
    """
    from distributed import as_completed

    if not encoder.is_loaded:
        encoder.load()
    if not texts:
        return ShardedEncoding(encoder.encode_documents([]), [])  # type: ignore[attr-defined]
    if shard_size is None:
        shard_size = default_shard_size(len(texts), sum(client.nthreads().values()))
    spec = EncoderSpec.of(encoder)
    starts = list(range(0, len(texts), shard_size))
    futures = {
        client.submit(encode_shard, spec, texts[s : s + shard_size], pure=False): n
        for n, s in enumerate(starts)
    }
    parts: list[Any] = [None] * len(starts)
    pids = [0] * len(starts)
    done = 0
    for future in as_completed(futures):
        n = futures[future]
        pids[n], parts[n] = future.result()
        future.release()
        done += min(shard_size, len(texts) - starts[n])
        if progress:
            progress(label, done, len(texts))
    if isinstance(parts[0], np.ndarray):
        return ShardedEncoding(np.concatenate(parts), pids)
    return ShardedEncoding([row for part in parts for row in part], pids)
