"""One error tree for the whole project, so callers (CLI, API) map failures in one place."""

from __future__ import annotations

from pathlib import Path


class SmartblockError(Exception):
    """Base of every error smartblock raises on purpose."""


class ConfigError(SmartblockError):
    """A setting, config file or command-line value is invalid."""


class DataError(SmartblockError):
    """Input data breaks its contract.

    Names where: the file, the 1-based line (JSONL) or 0-based row (Parquet), and the field.
    """

    def __init__(
        self,
        message: str,
        *,
        path: Path | str | None = None,
        line: int | None = None,
        row: int | None = None,
        field: str | None = None,
    ) -> None:
        self.path = str(path) if path is not None else None
        self.line = line
        self.row = row
        self.field = field
        where = []
        if self.path is not None:
            where.append(self.path)
        if line is not None:
            where.append(f"line {line}")
        if row is not None:
            where.append(f"row {row}")
        if field is not None:
            where.append(f"field '{field}'")
        prefix = ", ".join(where)
        super().__init__(f"{prefix}: {message}" if prefix else message)
        self.reason = message


class ModelFormatError(SmartblockError):
    """A saved model cannot be used: a file is missing or fails its checksum, or the manifest is unreadable,
    of another kind, or of a format this code does not read (see ``data.artifacts``)."""
