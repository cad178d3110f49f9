"""What the API shows beside scores: block titles and docs, and the user ids seen in the logs."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from data.layout import DataLayout
from features.block_attributes import BlockAttributes


@dataclass(frozen=True)
class DocView:
    doc_id: str
    title: str
    genre: str


@dataclass(frozen=True)
class BlockView:
    block_id: str
    title: str
    kind: str
    docs: tuple[DocView, ...]


@dataclass(frozen=True)
class BlockViews:
    """What the API shows (blocks, the user ids it offers) and the block attributes the features need."""

    features: BlockAttributes  # what feature computation needs
    blocks: dict[str, BlockView]
    users: tuple[str, ...]  # most active first

    @classmethod
    def load(cls, layout: DataLayout, docs_per_block: int = 10) -> BlockViews:
        blocks, docs = layout.read_blocks(validate_rows=False), layout.read_docs(validate_rows=False)
        doc_view = {
            d: DocView(d, t, g)
            for d, t, g in zip(
                docs["id"].to_pylist(), docs["title"].to_pylist(), docs["genre"].to_pylist(), strict=True
            )
        }
        views = {
            b: BlockView(b, t, k, tuple(doc_view[d] for d in ds[:docs_per_block] if d in doc_view))
            for b, t, k, ds in zip(
                blocks["id"].to_pylist(),
                blocks["title"].to_pylist(),
                blocks["kind"].to_pylist(),
                blocks["doc_ids"].to_pylist(),
                strict=True,
            )
        }
        counts = Counter(layout.read_events("impressions", validate_rows=False)["user_id"].to_pylist())
        users = tuple(u for u, _ in sorted(counts.items(), key=lambda item: (-item[1], item[0])))
        return cls(BlockAttributes.from_tables(blocks, docs), views, users)
