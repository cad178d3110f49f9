"""The records every stage exchanges: docs, blocks, search impressions, interactions and served features.

Each model is the single definition of its record: the Arrow schema used on disk is derived from it
(``data.schemas``), and loaders validate rows against it, so the two cannot drift apart.
"""

from __future__ import annotations

import base64
import binascii
from enum import StrEnum
from typing import Annotated

import numpy as np
from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

NonEmptyStr = Annotated[str, Field(min_length=1)]


class Genre(StrEnum):
    """The collection a doc comes from; genre blocks group one entity's docs of one genre."""

    BLOG = "blog"
    NEWS = "news"
    VIDEO = "video"
    SHOPPING = "shopping"
    PLACE = "place"
    QNA = "qna"


class BlockKind(StrEnum):
    TOPIC = "topic"  # one entity x one facet: "jeju island indoor attractions"
    GENRE = "genre"  # one entity x one genre: "jeju island videos"


class Team(StrEnum):
    """The side of a team-draft interleaved page a block came from."""

    A = "a"
    B = "b"


class InteractionType(StrEnum):
    CLICK = "click"
    DWELL = "dwell"


class Record(BaseModel):
    # Unknown fields are refused: a misspelt column must not vanish silently.
    model_config = ConfigDict(extra="forbid", frozen=True)


class Doc(Record):
    id: NonEmptyStr
    title: NonEmptyStr
    body: str
    genre: Genre
    keywords: list[NonEmptyStr]
    created_at: AwareDatetime


class Block(Record):
    id: NonEmptyStr
    title: NonEmptyStr
    kind: BlockKind
    keywords: list[NonEmptyStr]
    doc_ids: Annotated[list[NonEmptyStr], Field(min_length=1)]
    created_at: AwareDatetime


class ShownBlock(Record):
    block_id: NonEmptyStr
    position: Annotated[int, Field(ge=1)]  # 1 = top of the page
    # Probability that the logging policy puts this block at this position for this request (its marginal
    # over the policy's randomization); inverse-propensity estimators divide by it.
    propensity: Annotated[float, Field(gt=0.0, le=1.0)]


class SearchImpression(Record):
    request_id: NonEmptyStr
    ts: AwareDatetime
    user_id: NonEmptyStr
    session_id: NonEmptyStr
    query: NonEmptyStr
    shown: Annotated[list[ShownBlock], Field(min_length=1)]
    n_candidates: Annotated[int, Field(ge=0)]
    # Comma-separated when the user is in experiments of several layers: the i-th variant belongs to the i-th
    # experiment (``serving.experiments.assignment``).
    experiment: NonEmptyStr
    variant: NonEmptyStr
    ranker_version: NonEmptyStr
    # Team-draft interleaving only: which of the variant's two rankers ("a" or "b") put each block of
    # ``shown`` on the page, in the order of ``shown``; None on every other page.
    teams: list[Team] | None = None

    @model_validator(mode="after")
    def _positions_are_distinct(self) -> SearchImpression:
        positions = [s.position for s in self.shown]
        if len(set(positions)) != len(positions):
            raise ValueError("shown blocks repeat a position")
        if self.n_candidates < len(self.shown):
            raise ValueError(f"n_candidates={self.n_candidates} is below the {len(self.shown)} blocks shown")
        if self.teams is not None and len(self.teams) != len(self.shown):
            raise ValueError(f"teams has {len(self.teams)} entries for {len(self.shown)} shown blocks")
        return self


class Interaction(Record):
    request_id: NonEmptyStr
    ts: AwareDatetime
    user_id: NonEmptyStr
    block_id: NonEmptyStr
    doc_id: NonEmptyStr | None = None  # None: a click on the block header rather than on one of its docs
    position: Annotated[int, Field(ge=1)]
    type: InteractionType
    dwell_ms: Annotated[int, Field(ge=0)] | None = None
    # The client's id of this event: a retry of the same event carries the same id and is applied once
    # (features.ops.InteractionEvent.event_id); None in logs that have no such id.
    event_id: Annotated[str, Field(min_length=1, max_length=128)] | None = None

    @model_validator(mode="after")
    def _dwell_has_duration(self) -> Interaction:
        if self.type is InteractionType.DWELL and self.dwell_ms is None:
            raise ValueError("a dwell interaction needs dwell_ms")
        return self


# Served feature values: little-endian float32, base64 in JSON. float32 is what training tables hold
# (``features.dataset.feature_arrays``), so a row rebuilt from the log equals one built offline, at 4 bytes a
# value instead of the ~20 characters of a JSON float.
SERVED_DTYPE = np.dtype("<f4")


def pack_floats(values: np.ndarray) -> str:
    """One row of values as base64 of little-endian float32 (``ServedRow.values``)."""
    return base64.b64encode(np.asarray(values, dtype=SERVED_DTYPE).tobytes()).decode("ascii")


def unpack_floats(text: str) -> np.ndarray:
    """The float32 values of ``pack_floats``' text (a read-only view of the decoded bytes)."""
    return np.frombuffer(base64.b64decode(text, validate=True), dtype=SERVED_DTYPE)


class ServedRow(Record):
    block_id: NonEmptyStr
    # 1 = top of the page; 0 = a candidate the ranker scored and the page did not show (a logged sample).
    position: Annotated[int, Field(ge=0)]
    # The ranker's score as it ordered the candidates; None where no single ranker's score decided (the
    # unshown candidates of an interleaved page).
    score: Annotated[float, Field(allow_inf_nan=False)] | None = None
    # The feature row the ranker scored, in the order of the record's feature set: base64 of float32
    # (``pack_floats``), ``ServedFeatures.width`` values, all finite.
    values: NonEmptyStr

    @field_validator("values")
    @classmethod
    def _packed_floats(cls, text: str) -> str:
        try:
            raw = base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            raise ValueError("not base64 text (packed float32 values expected)") from None
        if len(raw) % SERVED_DTYPE.itemsize:
            raise ValueError(f"{len(raw)} bytes is not a whole number of float32 values (cut short?)")
        if not np.isfinite(np.frombuffer(raw, dtype=SERVED_DTYPE)).all():
            raise ValueError("holds a value that is not finite (NaN or infinity)")
        return text


class ServedFeatures(Record):
    """The feature rows one request's ranker scored, logged beside its impression (same stream, kind
    "served"): every shown block and a sample of the unshown candidates, so a training set built from
    served traffic holds exactly the values that were served (``features.served_dataset``)."""

    request_id: NonEmptyStr
    ts: AwareDatetime  # the impression's
    # Digest of the feature names in order (``features.served.FEATURE_SET``): a reader refuses rows of another
    # feature set, whose values would land in the wrong columns.
    feature_set: Annotated[str, Field(pattern=r"^[0-9a-f]{16}$")]
    width: Annotated[int, Field(ge=1)]  # values per row: the number of features
    rows: Annotated[list[ServedRow], Field(min_length=1)]

    @field_validator("rows")
    @classmethod
    def _rows_fit(cls, rows: list[ServedRow], info: ValidationInfo) -> list[ServedRow]:
        width = info.data.get("width")
        if width is not None:
            want = width * SERVED_DTYPE.itemsize
            for i, row in enumerate(rows):
                have = len(base64.b64decode(row.values))
                if have != want:
                    raise ValueError(
                        f"rows[{i}].values holds {have} bytes, not width {width} x 4 = {want} (cut short?)"
                    )
        if len({r.block_id for r in rows}) != len(rows):
            raise ValueError("rows repeat a block")
        positions = [r.position for r in rows if r.position]
        if len(set(positions)) != len(positions):
            raise ValueError("shown rows repeat a position")
        return rows


CONTRACTS: dict[str, type[Record]] = {
    "docs": Doc,
    "blocks": Block,
    "impressions": SearchImpression,
    "interactions": Interaction,
    "served": ServedFeatures,
}
