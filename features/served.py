"""The served-feature record (``data.contracts.ServedFeatures``): one request's scored feature rows packed for
the event stream, unpacked again for training, and the rule for which unshown candidates it carries.

In: the rows the ranker scored (``FEATURES`` order, one per candidate), their block ids, scores and page
positions. Out: a ``ServedFeatures`` record; and back, a (rows, len(NAMES)) float32 matrix, refused when the
record was written under another feature set (its values would land in the wrong columns).
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from datetime import datetime

import numpy as np

from data.contracts import SERVED_DTYPE, ServedFeatures, ServedRow
from data.errors import DataError
from features.definitions import NAMES
from features.keys import digest

# Names in order, hashed: a feature added, removed, renamed or moved changes it.
FEATURE_SET = digest("\n".join(NAMES))


def sample_unshown(request_id: str, n_unshown: int, n: int) -> np.ndarray:
    """Indices (ascending) of the ``n`` unshown candidates a list keeps, drawn uniformly from all
    ``n_unshown`` (all of them when there are no more), by a generator seeded with the request id alone: the
    served log and the offline candidate lists (``features.dataset``) pick by the same rule, replayably.

    Uniformly, not the top ``n``: a ranker orders every candidate, and a sample cut at a rank would tell a
    model, by rank alone, which blocks were shown.
    """
    if n_unshown <= n or n <= 0:
        return np.arange(min(n_unshown, max(n, 0)))
    rng = np.random.default_rng(int(digest(request_id), 16))
    return np.sort(rng.choice(n_unshown, size=n, replace=False))


def served_record(
    request_id: str,
    ts: datetime,
    block_ids: Sequence[str],
    rows: np.ndarray,
    scores: np.ndarray,
    page: Sequence[int],
    unshown: int,
    *,
    score_unshown: bool = True,
) -> ServedFeatures:
    """The record of one request: the rows of the blocks on its page (``page``: candidate indices in page
    order, position 1 first), then of ``unshown`` candidates not on it (``sample_unshown``, position 0).

    ``rows`` (``(n, len(NAMES))``) and ``scores`` are every candidate's, as the ranker scored them;
    ``score_unshown=False`` logs no score for the unshown (an interleaved page scores them by two rankers).
    Raises ``ValueError`` when a value or score is not finite (the contract refuses such a record).
    """
    if rows.shape != (len(block_ids), len(NAMES)):
        raise ValueError(f"rows of shape {rows.shape} for {len(block_ids)} blocks x {len(NAMES)} features")
    off_page = np.ones(len(block_ids), dtype=bool)
    off_page[list(page)] = False
    rest = np.flatnonzero(off_page)  # candidate order
    chosen = [*page, *rest[sample_unshown(request_id, len(rest), unshown)].tolist()]
    positions = [*range(1, len(page) + 1), *[0] * (len(chosen) - len(page))]
    packed = rows[chosen].astype(SERVED_DTYPE)  # the float32 a training table holds: cast once, here
    logged = scores[chosen].astype(np.float64)
    # The contract's checks, on the whole matrix at once: this runs inside every search, where validating
    # row by row cost ~0.2 ms (the readers, the archive and the training-set builder, validate each record).
    if not (np.isfinite(packed).all() and np.isfinite(logged).all()):
        raise ValueError(f"request {request_id!r}: a served value or score is not finite")
    width = len(NAMES) * SERVED_DTYPE.itemsize
    raw = packed.tobytes()
    fields = {"block_id", "position", "score", "values"}
    return ServedFeatures.model_construct(
        request_id=request_id,
        ts=ts,
        feature_set=FEATURE_SET,
        width=len(NAMES),
        rows=[
            ServedRow.model_construct(
                fields,
                block_id=block_ids[i],
                position=p,
                score=s if p or score_unshown else None,
                values=base64.b64encode(raw[j * width : (j + 1) * width]).decode("ascii"),
            )
            for j, (i, p, s) in enumerate(zip(chosen, positions, logged.tolist(), strict=True))
        ],
    )


def check_feature_set(feature_set: str, width: int, *, request_id: str, where: str) -> None:
    """Refuse a record of another feature set with a ``DataError`` naming ``where`` and the request."""
    if feature_set != FEATURE_SET or width != len(NAMES):
        raise DataError(
            f"request {request_id!r} was served under feature set {feature_set} ({width} features), not "
            f"this build's {FEATURE_SET} ({len(NAMES)} features): its values would land in the wrong "
            "columns; build this range's training set with the point-in-time replay instead",
            path=where,
        )


def unpack_rows(values: Sequence[str]) -> np.ndarray:
    """Packed rows (``ServedRow.values`` of the current feature set) as one (n, len(NAMES)) float32 matrix."""
    raw = b"".join(base64.b64decode(v) for v in values)
    return np.frombuffer(raw, dtype=SERVED_DTYPE).reshape(len(values), len(NAMES))
