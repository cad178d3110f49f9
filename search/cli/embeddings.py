"""``smartblock train user-embeddings`` and ``smartblock embeddings refresh``: the M3 user vectors.

``train user-embeddings`` joins the ``train`` group that the ranking stage owns (``search.cli.ranking``);
torch and the stage's modules load inside the commands, so ``smartblock --help`` stays fast.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from data.errors import ConfigError
from search.cli.common import ClusterOption, console, on_cluster, print_json, progress_bar, state
from search.cli.ranking import train_app

if TYPE_CHECKING:
    from features.embeddings.config import EmbeddingSettings
    from features.store import RedisFeatureStore

app = typer.Typer(help="M3 user embeddings in the feature store.", no_args_is_help=True)

WorldOpt = Annotated[Path, typer.Option("--world", help="Data folder (a world or your own logs).")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object.")]


def register(root: typer.Typer) -> None:
    """Add ``train user-embeddings`` to the ranking stage's ``train`` group and the ``embeddings`` group."""
    train_app.command("user-embeddings")(train_user_embeddings)
    root.add_typer(app, name="embeddings")


def _settings(**overrides: int | None) -> EmbeddingSettings:
    from features.embeddings.config import EmbeddingSettings

    # Read from search.settings once it carries the stage (key "embeddings"); defaults until then.
    settings = getattr(state.settings(), "embeddings", None) or EmbeddingSettings()
    updates = {k: v for k, v in overrides.items() if v is not None}
    try:
        return EmbeddingSettings.model_validate({**settings.model_dump(), **updates})
    except ValueError as exc:
        raise ConfigError(f"invalid embedding settings: {exc}") from None


def _store() -> RedisFeatureStore:
    from features.store import RedisFeatureStore

    return RedisFeatureStore.connect(state.settings().features)


def train_user_embeddings(
    world: WorldOpt,
    epochs: Annotated[
        int | None, typer.Option("--epochs", min=1, help="Most epochs (default: settings).")
    ] = None,
    threads: Annotated[int | None, typer.Option("--threads", min=1, help="torch threads.")] = None,
    seed: Annotated[int | None, typer.Option("--seed", min=0)] = None,
    valid_days: Annotated[
        int | None, typer.Option("--valid-days", min=1, help="Days before the test days for early stopping.")
    ] = None,
    test_days: Annotated[int | None, typer.Option("--test-days", min=1, help="Last days, held out.")] = None,
    no_store: Annotated[
        bool, typer.Option("--no-store", help="Train and evaluate only; write nothing to the feature store.")
    ] = False,
    engine: Annotated[
        bool,
        typer.Option(
            "--engine",
            help="Train M3 data-parallel on the engine: a local Dask cluster of engine.workers processes, "
            "one torch.distributed rank each; default: in this process.",
        ),
    ] = False,
    cluster: ClusterOption = None,
    as_json: JsonOpt = False,
) -> None:
    """Train M3 user embeddings, compare them with popular / average / K-window baselines on the last days,
    save the model and write one float16 vector per user and per block to the feature store."""
    from data.layout import DataLayout
    from features.embeddings.pipeline import METHODS
    from features.embeddings.pipeline import train_user_embeddings as run
    from search.jobs.results import EmbeddingRun

    settings = _settings(
        threads=threads, epochs=epochs, seed=seed, valid_days=valid_days, test_days=test_days
    )
    store = None if no_store else _store()
    on_engine = on_cluster(state.settings(), cluster).engine if engine or cluster else None
    with progress_bar(not as_json) as report:
        result = EmbeddingRun.model_validate(
            run(DataLayout(world), settings, store, progress=report, engine=on_engine)
        )
    k = f"recall@{settings.eval_k}"
    if as_json:
        print_json({m: {k: result.metrics[m].recall, "mrr": result.metrics[m].mrr} for m in METHODS})
        return
    table = Table(title=f"next-block prediction, test days {' to '.join(result.data_range.test)}")
    for col in ("method", k, "mrr", "clicks"):
        table.add_column(col, justify="right")
    for m in METHODS:
        row = result.metrics[m]
        table.add_row(m, f"{row.recall:.4f}", f"{row.mrr:.4f}", str(row.events))
    console.print(table)
    console.print(f"saved {result.folder}; wrote {result.written} vectors")


@app.command()
def refresh(
    world: WorldOpt,
    since: Annotated[
        str | None,
        typer.Option("--since", help="YYYY-MM-DD; default: where the last training or refresh stopped."),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Recompute the vectors of users with new consumed blocks, with the current model (no retraining)."""
    from data.layout import DataLayout
    from features.embeddings.pipeline import refresh_user_vectors

    try:
        start = date.fromisoformat(since) if since else None
    except ValueError as exc:
        raise ConfigError(f"--since must be YYYY-MM-DD: {exc}") from None
    result = refresh_user_vectors(DataLayout(world), _store(), _settings(), since=start)
    if as_json:
        print_json(result)
    else:
        console.print(result)
