"""Start-up warm-up of the query path: made-up queries through the fused retriever before serving.

A fresh process answers its first few hundred queries slowly: the JVM compiles Lucene's impact search just
in time (first-seen SPLADE search p99 38 ms over the first 300 queries, 13 ms over the next 300, 9 ms over
the 300 after, on the small world), and ONNX Runtime and FAISS settle their buffers. Users should not pay
for that. The warm-up queries are pairs and triples of words drawn from the catalogue's own titles (not from
the logs), searched through the same path a request takes; their encodings are then dropped from the
encoders' caches, so no made-up query takes a cache slot from a user's.

In: a built retriever and catalogue texts. Out: how many queries ran and how long they took.
"""

from __future__ import annotations

import random
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass

from retrieval.base import BaseRetriever

_WORD = re.compile(r"[a-z]{3,}")


@dataclass(frozen=True)
class WarmUp:
    queries: int
    seconds: float


def made_up_queries(texts: Sequence[str], n: int, seed: int = 0) -> list[str]:
    """``n`` distinct queries of 1-3 catalogue words each (random, seeded)."""
    words = sorted({w for t in texts for w in _WORD.findall(t.lower())})
    if not words:
        return []
    rng = random.Random(seed)
    out: dict[str, None] = {}
    for _ in range(n * 4):  # a small vocabulary may not give n distinct ones: stop trying after a while
        if len(out) >= n:
            break
        out[" ".join(rng.sample(words, min(len(words), rng.randint(1, 3))))] = None
    return list(out)


def warm_up(retriever: BaseRetriever, texts: Sequence[str], n: int, k: int, seed: int = 0) -> WarmUp:
    """Search ``n`` made-up queries for ``k`` hits each, then forget their encodings."""
    started = time.perf_counter()
    queries = made_up_queries(texts, n, seed)
    for query in queries:
        retriever.search(query, k)
    for member in [retriever, *getattr(retriever, "members", {}).values()]:
        encoder = getattr(member, "encoder", None)
        if encoder is not None:
            encoder.cache.clear()
    return WarmUp(len(queries), time.perf_counter() - started)
