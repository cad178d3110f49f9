"""The ``smartblock`` command line: one Typer app with a sub-app per stage.

Every command that reports metrics takes ``--json`` and then prints one JSON object on stdout.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from data.errors import SmartblockError
from search.cli import (
    analysis,
    embeddings,
    experiments,
    features,
    ranking,
    retrieval,
    serving,
    simulate,
    world,
)
from search.cli.common import state

app = typer.Typer(
    name="smartblock",
    help="Personalized smart-block search ranking: simulate a world, retrieve, build features, rank, serve.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.add_typer(world.app, name="world")
app.command("quickstart")(world.quickstart)
# analysis joins the experiment group, so it registers after it.
for stage in (retrieval, features, ranking, embeddings, serving, experiments, analysis, simulate):
    stage.register(app)


@app.callback()
def _root(
    config: Annotated[
        Path | None,
        typer.Option("--config", help="Settings file (YAML or TOML); SMARTBLOCK_* variables override it."),
    ] = None,
) -> None:
    state.config_file = config


def main() -> None:
    # Models load from installed wheels or local folders; no command may reach for a model hub.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    try:
        app()
    except SmartblockError as exc:
        Console(stderr=True, soft_wrap=True).print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False)
        sys.exit(2)
