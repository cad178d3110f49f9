"""The records every stage exchanges: docs, blocks, search impressions and interactions.

Each model is the single definition of its record: the Arrow schema used on disk is derived from it
(``data.schemas``), and loaders validate rows against it, so the two cannot drift apart.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, model_validator

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


CONTRACTS: dict[str, type[Record]] = {
    "docs": Doc,
    "blocks": Block,
    "impressions": SearchImpression,
    "interactions": Interaction,
}
