"""What every CLI command shares: settings loading, JSON output and progress bars."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from search.settings import Settings, load_settings

console = Console(stderr=True, soft_wrap=True)


@dataclass
class CliState:
    config_file: Path | None = None

    def settings(self) -> Settings:
        return load_settings(self.config_file)


state = CliState()

ClusterOption = Annotated[
    str | None,
    typer.Option(
        "--cluster",
        metavar="ADDRESS",
        help="Run the offline jobs on the running Dask cluster at ADDRESS (tcp://host:8786) instead of a "
        "local cluster started for the command (setting engine.address).",
    ),
]


def on_cluster(settings: Settings, cluster: str | None) -> Settings:
    """``settings`` with ``--cluster`` as the engine's address, when given."""
    if cluster is None:
        return settings
    return settings.model_copy(update={"engine": settings.engine.model_copy(update={"address": cluster})})


def print_json(payload: Any) -> None:
    # Plain print, not rich: scripts parse stdout.
    print(json.dumps(payload, indent=2, sort_keys=False, default=str))


# How often a stage's progress is written as a line when stderr is not a terminal (a log file, nohup, CI).
LOG_EVERY_SECONDS = 30.0


@contextmanager
def progress_bar(enabled: bool = True) -> Iterator[Callable[[str, int, int], None]]:
    """A callback ``(stage, done, total)`` that drives one rich progress bar per stage (on stderr); where
    stderr is not a terminal, one line per stage every ``LOG_EVERY_SECONDS`` and when it ends instead."""
    if not enabled:
        yield lambda stage, done, total: None
        return
    if not console.is_terminal:
        # rich draws nothing live without a terminal: an hour of the large world's index build would
        # leave its log empty until the end.
        lines = ProgressLines(lambda line: console.print(line, markup=False, highlight=False))
        try:
            yield lines
        finally:  # a stage that stopped short of its total, or an interrupted one, says where it stopped
            lines.flush()
        return
    with Progress(
        TextColumn("{task.description:<12}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    ) as bar:
        tasks: dict[str, Any] = {}

        def update(stage: str, done: int, total: int) -> None:
            if stage not in tasks:
                tasks[stage] = bar.add_task(stage, total=total)
            bar.update(tasks[stage], completed=done, total=total)

        yield update


class ProgressLines:
    """``(stage, done, total)`` as plain lines: each stage's first call, then at most one line per
    ``every`` seconds, and its completion, each with the rate since the stage began; ``flush`` writes
    what was not written yet. A stage whose count goes back or whose total changes, or one called again
    after it ended (a second encoder or search under the same name), begins again."""

    def __init__(
        self,
        write: Callable[[str], None],
        every: float = LOG_EVERY_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.write, self.every, self.clock = write, every, clock
        self._stages: dict[str, _StageClock] = {}

    def __call__(self, stage: str, done: int, total: int) -> None:
        now = self.clock()
        seen = self._stages.get(stage)
        begins = seen is None or seen.ended or done < seen.done or total != seen.total
        if begins:
            seen = self._stages[stage] = _StageClock(began=now, first=done, total=total)
        seen.done, seen.at = done, now
        if begins or now - seen.written_at >= self.every or 0 < total <= done:
            self._write(stage, seen)

    def flush(self) -> None:
        for stage, seen in self._stages.items():
            if seen.written != seen.done:
                self._write(stage, seen)

    def _write(self, stage: str, seen: _StageClock) -> None:
        done, total = seen.done, seen.total
        seen.written, seen.written_at, seen.ended = done, seen.at, 0 < total <= done
        elapsed = seen.at - seen.began
        rate = f", {(done - seen.first) / elapsed:,.1f}/s" if elapsed > 0 and done > seen.first else ""
        share = f" ({100 * done / total:.0f}%)" if total > 0 else ""
        self.write(f"{stage}: {done:,}/{total:,}{share} in {elapsed:,.1f} s{rate}")


@dataclass
class _StageClock:
    began: float
    first: int
    total: int
    done: int = -1
    at: float = 0.0  # when ``done`` was reported
    written: int = -1  # the count last written
    written_at: float = 0.0
    ended: bool = False
