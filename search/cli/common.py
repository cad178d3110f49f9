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
        yield ProgressLines(console.print)
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
    ``every`` seconds, and its completion, each with the rate since the stage began. A stage whose count
    goes back (a second encoder under the same name) begins again."""

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
        if seen is None or done < seen.done:
            seen = self._stages[stage] = _StageClock(began=now, first=done, done=done)
        elif seen.ended or (now - seen.written < self.every and not (0 < total <= done)):
            seen.done = done
            return
        seen.done, seen.written, seen.ended = done, now, 0 < total <= done
        elapsed = now - seen.began
        rate = f", {(done - seen.first) / elapsed:,.1f}/s" if elapsed > 0 and done > seen.first else ""
        share = f" ({100 * done / total:.0f}%)" if total > 0 else ""
        self.write(f"{stage}: {done:,}/{total:,}{share} in {elapsed:,.1f} s{rate}")


@dataclass
class _StageClock:
    began: float
    first: int
    done: int
    written: float = 0.0
    ended: bool = False
