"""What the text retrievers index and are evaluated on: a world's blocks, or a BEIR-layout collection."""

from __future__ import annotations

import csv
import json
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import pyarrow.compute as pc

from data.errors import DataError
from data.layout import DataLayout
from retrieval.base import Passage

MAX_DOC_TITLES = 10


def block_passages(layout: DataLayout) -> list[Passage]:
    """One passage per block, in block-id order: title, keywords and the titles of its first docs.

    Doc titles add the block's vocabulary (genre words such as "video", the items it covers) without the
    long bodies, which would slow encoding and dilute the block's topic.
    """
    blocks = layout.read_blocks(validate_rows=False).sort_by("id")
    docs = layout.read_docs(validate_rows=False).select(["id", "title"])
    titles = dict(zip(docs["id"].to_pylist(), docs["title"].to_pylist(), strict=True))
    out = []
    for bid, title, keywords, doc_ids in zip(
        blocks["id"].to_pylist(),
        blocks["title"].to_pylist(),
        blocks["keywords"].to_pylist(),
        blocks["doc_ids"].to_pylist(),
        strict=True,
    ):
        parts = [title, ", ".join(keywords)]
        parts += [titles[d] for d in doc_ids[:MAX_DOC_TITLES] if d in titles]
        out.append(Passage(bid, ". ".join(parts)))
    if not out:
        raise DataError("the world has no blocks", path=layout.root)
    if len(set(pc.unique(blocks["id"]).to_pylist())) != len(out):
        raise DataError("block ids are not unique", path=layout.table_file("blocks"))
    return out


@dataclass(frozen=True)
class BeirCollection:
    name: str
    passages: list[Passage]
    queries: dict[str, str]  # query id -> text, judged queries only
    qrels: dict[str, dict[str, int]]  # query id -> doc id -> grade


def _read_jsonl(path: Path) -> list[dict]:
    if not path.is_file():
        raise DataError("file not found", path=path)
    rows = []
    with path.open(encoding="utf-8") as fh:
        for line_no, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"invalid JSON: {exc.msg}", path=path, line=line_no) from None
            if not isinstance(row, dict) or not isinstance(row.get("_id"), str | int):
                raise DataError("expected an object with an '_id'", path=path, line=line_no, field="_id")
            rows.append(row)
    return rows


def load_beir(folder: Path | str, split: str = "test") -> BeirCollection:
    """Read corpus.jsonl (_id, title, text), queries.jsonl (_id, text) and qrels/<split>.tsv."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError("not a BEIR folder (expected corpus.jsonl, queries.jsonl, qrels/)", path=folder)
    passages = []
    for row in _read_jsonl(folder / "corpus.jsonl"):
        text = " ".join(str(row.get(f) or "").strip() for f in ("title", "text")).strip()
        passages.append(Passage(str(row["_id"]), text))
    all_queries = {str(r["_id"]): str(r.get("text", "")) for r in _read_jsonl(folder / "queries.jsonl")}
    qrels_path = folder / "qrels" / f"{split}.tsv"
    if not qrels_path.is_file():
        raise DataError("file not found", path=qrels_path)
    qrels: dict[str, dict[str, int]] = defaultdict(dict)
    with qrels_path.open(encoding="utf-8") as fh:
        for line_no, row in enumerate(csv.reader(fh, delimiter="\t"), start=1):
            if line_no == 1 and row and not row[-1].lstrip("-").isdigit():
                continue  # the header row
            if len(row) < 3:
                raise DataError("expected query-id, corpus-id, score", path=qrels_path, line=line_no)
            try:
                grade = int(row[2])
            except ValueError:
                raise DataError(
                    f"score {row[2]!r} is not an integer", path=qrels_path, line=line_no
                ) from None
            if row[0] not in all_queries:
                raise DataError(f"unknown query id {row[0]!r}", path=qrels_path, line=line_no)
            qrels[row[0]][row[1]] = grade
    judged = {q: all_queries[q] for q in sorted(qrels, key=_natural) if any(g > 0 for g in qrels[q].values())}
    return BeirCollection(folder.name, passages, judged, {q: qrels[q] for q in judged})


def _natural(qid: str) -> tuple[int, str]:
    return (int(qid), "") if qid.isdigit() else (1 << 62, qid)
