"""What every CLI command shares: settings loading, JSON output and progress bars."""

from __future__ import annotations

import json
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


@contextmanager
def progress_bar(enabled: bool = True) -> Iterator[Callable[[str, int, int], None]]:
    """A callback ``(stage, done, total)`` that drives one rich progress bar per stage (on stderr)."""
    if not enabled:
        yield lambda stage, done, total: None
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
