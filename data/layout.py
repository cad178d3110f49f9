"""Where each contract lives in a data folder, and readers for the day-partitioned event logs.

A data folder (a simulated world or a portal's own export) looks like::

    world.json                      manifest (scale, seed, days, counts)
    docs.parquet | docs.jsonl
    blocks.parquet | blocks.jsonl
    events/impressions/day=YYYY-MM-DD/*.parquet|*.jsonl
    events/interactions/day=YYYY-MM-DD/*.parquet|*.jsonl
    events/served/day=YYYY-MM-DD/*.parquet|*.jsonl      served feature rows (server logs only; optional)
    truth/                          simulator ground truth: evaluation only
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Literal

import pyarrow as pa
import pyarrow.parquet as pq

from data.contracts import Block, Doc, Interaction, Record, SearchImpression, ServedFeatures
from data.errors import DataError
from data.io import read_json, read_table
from data.schemas import arrow_schema

EventKind = Literal["impressions", "interactions", "served"]
EVENT_CONTRACTS: dict[str, type[Record]] = {
    "impressions": SearchImpression,
    "interactions": Interaction,
    "served": ServedFeatures,
}
DATA_SUFFIXES = (".parquet", ".jsonl")


@dataclass(frozen=True)
class DataLayout:
    root: Path

    @property
    def manifest(self) -> Path:
        return self.root / "world.json"

    @property
    def truth(self) -> Path:
        return self.root / "truth"

    def events_dir(self, kind: EventKind) -> Path:
        return self.root / "events" / kind

    def day_dir(self, kind: EventKind, day: date) -> Path:
        return self.events_dir(kind) / f"day={day.isoformat()}"

    def table_file(self, name: Literal["docs", "blocks"]) -> Path:
        for suffix in DATA_SUFFIXES:
            path = self.root / f"{name}{suffix}"
            if path.is_file():
                return path
        raise DataError(f"no {name}.parquet or {name}.jsonl in this data folder", path=self.root)

    def read_manifest(self) -> dict:
        return read_json(self.manifest)

    def days(self, kind: EventKind) -> list[date]:
        """The days that have a partition, in order; a partition folder with a bad name is refused."""
        folder = self.events_dir(kind)
        if not folder.is_dir():
            raise DataError(f"no {kind} logs (expected a folder of day=YYYY-MM-DD partitions)", path=folder)
        days = []
        for child in sorted(folder.iterdir()):
            if not child.is_dir():
                continue
            name = child.name
            try:
                if not name.startswith("day="):
                    raise ValueError
                days.append(date.fromisoformat(name.removeprefix("day=")))
            except ValueError:
                raise DataError("partition folder must be named day=YYYY-MM-DD", path=child) from None
        return days

    def day_files(self, kind: EventKind, day: date) -> list[Path]:
        return sorted(p for p in self.day_dir(kind, day).iterdir() if p.suffix in DATA_SUFFIXES)

    def day_rows(self, kind: EventKind, day: date) -> int:
        """Events logged on ``day``, counted from Parquet footers and JSONL lines, not read."""
        rows = 0
        for path in self.day_files(kind, day):
            if path.suffix == ".parquet":
                rows += pq.ParquetFile(path).metadata.num_rows
            else:
                with path.open("rb") as fh:
                    rows += sum(1 for line in fh if line.strip())
        return rows

    def read_docs(self, *, validate_rows: bool = True) -> pa.Table:
        return read_table(self.table_file("docs"), Doc, validate_rows=validate_rows)

    def read_blocks(self, *, validate_rows: bool = True) -> pa.Table:
        return read_table(self.table_file("blocks"), Block, validate_rows=validate_rows)

    def iter_event_days(
        self,
        kind: EventKind,
        *,
        start: date | None = None,
        end: date | None = None,
        validate_rows: bool = True,
    ) -> Iterator[tuple[date, pa.Table]]:
        """Each day's events in [start, end] (inclusive) as one table, oldest day first."""
        contract = EVENT_CONTRACTS[kind]
        for day in self.days(kind):
            if (start and day < start) or (end and day > end):
                continue
            tables = [read_table(p, contract, validate_rows=validate_rows) for p in self.day_files(kind, day)]
            if tables:
                yield day, pa.concat_tables(tables)

    def read_events(
        self,
        kind: EventKind,
        *,
        start: date | None = None,
        end: date | None = None,
        validate_rows: bool = True,
    ) -> pa.Table:
        tables = [t for _, t in self.iter_event_days(kind, start=start, end=end, validate_rows=validate_rows)]
        if not tables:
            return arrow_schema(EVENT_CONTRACTS[kind]).empty_table()
        return pa.concat_tables(tables)
