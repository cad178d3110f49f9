"""Time and day-split helpers every stage shares: day boundaries in epoch milliseconds, the split of the
logged days into train / validation / test, and the progress callback that long jobs report through.

Days are UTC calendar days, as the event logs are partitioned.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime

from data.errors import DataError

DAY_MS = 86_400_000

# A long job reports (stage, done, total); the CLI draws it as a progress bar.
Progress = Callable[[str, int, int], None]


def day_start_ms(day: date) -> int:
    """Midnight UTC of ``day`` in epoch milliseconds."""
    return int(datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp() * 1000)


class NotEnoughDays(DataError):
    """The logs span fewer days than a split needs."""


@dataclass(frozen=True)
class DaySplit:
    """Inclusive day ranges: train, then validation (early stopping), then the held-out test days."""

    train: tuple[date, date]
    valid: tuple[date, date]
    test: tuple[date, date]

    @property
    def first(self) -> date:
        return self.train[0]

    @property
    def last(self) -> date:
        return self.test[1]

    @property
    def valid_start_ms(self) -> int:
        return day_start_ms(self.valid[0])

    @property
    def test_start_ms(self) -> int:
        return day_start_ms(self.test[0])

    @property
    def end_ms(self) -> int:
        """The instant just after the last test day."""
        return day_start_ms(self.test[1]) + DAY_MS

    def to_json(self) -> dict[str, list[str]]:
        return {k: [d.isoformat() for d in getattr(self, k)] for k in ("train", "valid", "test")}


def split_days(days: list[date], *, valid_days: int, test_days: int, warmup_days: int = 0) -> DaySplit:
    """The last ``test_days`` held out for testing, the ``valid_days`` before them for validation, the rest
    after ``warmup_days`` (days that only warm up the features) for training."""
    need = warmup_days + 1 + valid_days + test_days
    if len(days) < need:
        raise NotEnoughDays(
            f"{len(days)} logged days, need at least {need} (warmup {warmup_days}, 1 training, validation "
            f"{valid_days}, test {test_days}): training needs at least one day before validation and test"
        )
    days = sorted(days)
    test = days[len(days) - test_days :]
    valid = days[len(days) - test_days - valid_days : len(days) - test_days]
    train = days[warmup_days : len(days) - test_days - valid_days]
    return DaySplit((train[0], train[-1]), (valid[0], valid[-1]), (test[0], test[-1]))
