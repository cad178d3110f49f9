"""Public learning-to-rank files (SVMlight / LETOR) as ``ListwiseData``.

One row per line: ``<label> [qid:<id>] <index>:<value> ... [# comment]``, indices 1-based. The list (query)
of each row comes from the inline ``qid:`` or, when the rows carry none, from LightGBM's sidecar
``<file>.query`` holding one list size per line. Rows of one query must be contiguous. Features never given
on a line are 0 (SVMlight is sparse). Anything else raises ``DataError`` naming the file, line and token.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from data.errors import DataError
from ranking.dataset import ListwiseData


def load_svmlight(
    path: Path | str, n_features: int | None = None, query_file: Path | None = None
) -> ListwiseData:
    """Read an SVMlight/LETOR file into lists.

    Args:
        path: the rows.
        n_features: width of the dense matrix (give the training file's width when reading a test file, so
            columns line up); default: the largest index in the file.
        query_file: sidecar of list sizes; default ``<path>.query`` when the rows carry no ``qid:``.

    Returns:
        ``ListwiseData`` with features ``f1..fF`` and ``list_meta["qid"]`` (the file's query ids, or
        the list's ordinal for sidecar files).
    """
    path = Path(path)
    if not path.is_file():
        raise DataError("file not found", path=path)
    labels: list[float] = []
    qids: list[str | None] = []
    cols: list[np.ndarray] = []
    vals: list[np.ndarray] = []
    with path.open(encoding="utf-8") as fh:
        for lineno, raw in enumerate(fh, start=1):
            line = raw.split("#", 1)[0].strip()
            if not line:
                continue
            label, qid, idx, val = _parse_line(line, path, lineno)
            labels.append(label)
            qids.append(qid)
            cols.append(idx)
            vals.append(val)
    if not labels:
        raise DataError("no rows", path=path)
    width = max((int(c.max()) for c in cols if c.size), default=0)
    if n_features is not None:
        if width > n_features:
            raise DataError(f"feature index {width} exceeds the expected {n_features} features", path=path)
        width = n_features
    dense = np.zeros((len(labels), width), np.float32)
    for r, (c, v) in enumerate(zip(cols, vals, strict=True)):
        dense[r, c - 1] = v
    offsets, list_ids = _lists(path, qids, query_file)
    return ListwiseData(
        dense=dense,
        labels=np.asarray(labels, np.float32),
        offsets=offsets,
        feature_names=tuple(f"f{i}" for i in range(1, width + 1)),
        list_meta={"qid": list_ids},
    )


def _parse_line(line: str, path: Path, lineno: int) -> tuple[float, str | None, np.ndarray, np.ndarray]:
    tokens = line.split()
    try:
        label = float(tokens[0])
    except ValueError:
        raise DataError(
            f"label must be a number, got '{tokens[0]}'", path=path, line=lineno, field="label"
        ) from None
    if not np.isfinite(label) or label < 0:
        raise DataError(
            f"label must be finite and >= 0, got '{tokens[0]}'", path=path, line=lineno, field="label"
        )
    qid: str | None = None
    idx: list[int] = []
    val: list[float] = []
    for pos, token in enumerate(tokens[1:], start=2):
        key, sep, value = token.partition(":")
        if not sep or not key or not value:
            raise DataError(
                f"token {pos} '{token}': expected <index>:<value> or qid:<id>",
                path=path,
                line=lineno,
                field=token,
            )
        if key == "qid":
            if qid is not None or idx:
                raise DataError(
                    f"token {pos} '{token}': qid must come once, before the features",
                    path=path,
                    line=lineno,
                    field="qid",
                )
            qid = value
            continue
        try:
            i, v = int(key), float(value)
        except ValueError:
            raise DataError(
                f"token {pos} '{token}': index must be an integer and value a number",
                path=path,
                line=lineno,
                field=token,
            ) from None
        if i < 1:
            raise DataError(f"token {pos} '{token}': indices start at 1", path=path, line=lineno, field=token)
        if idx and i <= idx[-1]:
            raise DataError(
                f"token {pos} '{token}': indices must increase along a line",
                path=path,
                line=lineno,
                field=token,
            )
        if not np.isfinite(v):
            raise DataError(
                f"token {pos} '{token}': value is not finite", path=path, line=lineno, field=token
            )
        idx.append(i)
        val.append(v)
    return label, qid, np.asarray(idx, np.int64), np.asarray(val, np.float32)


def _lists(path: Path, qids: list[str | None], query_file: Path | None) -> tuple[np.ndarray, np.ndarray]:
    """List offsets and one id per list, from inline qids or the ``.query`` sidecar."""
    has_qid = [q is not None for q in qids]
    if any(has_qid) and not all(has_qid):
        first = has_qid.index(False) if has_qid[0] else has_qid.index(True)
        raise DataError("some rows carry qid: and others do not", path=path, field=f"row {first + 1}")
    if all(has_qid) and query_file is None:
        starts = [0] + [r for r in range(1, len(qids)) if qids[r] != qids[r - 1]]
        ids = [qids[s] for s in starts]
        if len(set(ids)) != len(ids):
            seen: set[str | None] = set()
            dup = next(q for q in ids if q in seen or seen.add(q))
            raise DataError(f"rows of qid:{dup} are not contiguous", path=path, field="qid")
        return np.asarray([*starts, len(qids)], np.int64), np.asarray(ids, dtype=object)
    sidecar = query_file or Path(f"{path}.query")
    if not sidecar.is_file():
        raise DataError(f"rows carry no qid: and the sidecar {sidecar} does not exist", path=path)
    sizes: list[int] = []
    for lineno, raw in enumerate(sidecar.read_text(encoding="utf-8").splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            size = int(raw.strip())
        except ValueError:
            size = -1
        if size < 1:
            raise DataError(
                f"expected a list size >= 1, got '{raw.strip()}'", path=sidecar, line=lineno, field="size"
            )
        sizes.append(size)
    if sum(sizes) != len(qids):
        raise DataError(f"list sizes sum to {sum(sizes)} but {path} has {len(qids)} rows", path=sidecar)
    return np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64), np.arange(len(sizes)).astype(object)
