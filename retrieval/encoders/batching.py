"""Tokenise texts into padded id/mask arrays, and batch passages by token length.

Both encoder backends take the same inputs, ``input_ids`` and ``attention_mask`` as (B, L) int64 arrays,
right-padded to the longest row of the batch. ``token_type_ids`` are left out: single-segment texts have
all-zero type ids, which is also what the models use when none are given.

Index-time encoding sorts passages by token length before batching (then restores their order): a batch of
similar lengths wastes little work on padding. Sorting happens within chunks of passages, so a large
catalogue never holds every passage's token ids at once.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np

from retrieval.encoders.tokenizer import TextTokenizer

# Passages tokenised (and sorted) at a time: padding waste is already small at this size.
CHUNK = 8192


def pad(rows: Sequence[Sequence[int]], pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    """(input_ids, attention_mask), each (B, L) int64, rows right-padded to the longest one (L)."""
    width = max((len(r) for r in rows), default=0)
    ids = np.full((len(rows), width), pad_id, dtype=np.int64)
    mask = np.zeros((len(rows), width), dtype=np.int64)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = row
        mask[i, : len(row)] = 1
    return ids, mask


def encode_inputs(
    tokenizer: TextTokenizer, texts: Sequence[str], max_length: int
) -> tuple[np.ndarray, np.ndarray]:
    """(input_ids, attention_mask) of ``texts`` in their order: what a query (or a small batch) needs."""
    return pad(tokenizer.token_ids(texts, max_length), tokenizer.pad_token_id)


def length_batches(
    tokenizer: TextTokenizer, texts: Sequence[str], max_length: int, batch_size: int
) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """(positions in ``texts``, input_ids, attention_mask) per batch, longest passages first in each chunk.

    Writing each batch's outputs at its positions restores the original order.
    """
    for start in range(0, len(texts), CHUNK):
        rows = tokenizer.token_ids(texts[start : start + CHUNK], max_length)
        order = np.argsort([-len(r) for r in rows], kind="stable")  # longest first: the peak memory early
        for b in range(0, len(order), batch_size):
            idx = order[b : b + batch_size]
            ids, mask = pad([rows[i] for i in idx], tokenizer.pad_token_id)
            yield idx + start, ids, mask
