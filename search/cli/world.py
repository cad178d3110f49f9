"""``smartblock world``: generate a simulated world and describe it."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from search.cli.common import console, print_json, progress_bar, state
from search.settings import Scale

if TYPE_CHECKING:
    from features.store import RedisFeatureStore

# Training-time cap of the M3 model quickstart trains for serving (CI runs quickstart on 2 cores).
QUICKSTART_M3_SECONDS = 90.0

app = typer.Typer(
    help="Generate and inspect simulated worlds (docs, blocks, users, logs, truth).", no_args_is_help=True
)


@app.command()
def generate(
    out: Annotated[
        Path | None, typer.Option("--out", help="Folder to write (default: <data_dir>/<scale>).")
    ] = None,
    scale: Annotated[
        Scale | None, typer.Option("--scale", help="tiny (tests), small (quickstart), large.")
    ] = None,
    seed: Annotated[
        int | None, typer.Option("--seed", min=0, help="Random seed; same seed, same bytes.")
    ] = None,
    workers: Annotated[
        int, typer.Option("--workers", min=1, help="Processes simulating days in parallel.")
    ] = 1,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing world in OUT.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the manifest as JSON.")] = False,
) -> None:
    """Write a world: docs, blocks, day-partitioned impressions and interactions, and truth/."""
    from data.world.generate import generate_world

    settings = state.settings()
    scale = scale or settings.world.scale
    seed = settings.world.seed if seed is None else seed
    out = out or settings.data_dir / scale
    started = time.perf_counter()
    with progress_bar(not as_json) as report:
        manifest = generate_world(
            out, scale=scale, seed=seed, workers=workers, overwrite=overwrite, progress=report
        )
    manifest["seconds"] = round(time.perf_counter() - started, 2)
    if as_json:
        print_json(manifest)
        return
    console.print(f"wrote {out} in {manifest['seconds']} s")
    _print_counts(manifest["counts"])


@app.command()
def stats(
    world: Annotated[Path, typer.Argument(help="A world folder written by `world generate`.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Counts, CTR by position, query click entropy and the oracle's gain from personalization."""
    from data.world.stats import world_stats

    result = world_stats(world)
    if as_json:
        print_json(result)
        return
    _print_stats(result)


def quickstart(
    world: Annotated[
        Path | None, typer.Option("--world", help="World folder (default: <data_dir>/small).")
    ] = None,
    scale: Annotated[Scale, typer.Option("--scale")] = "small",
    workers: Annotated[int, typer.Option("--workers", min=1)] = max(1, min(2, os.cpu_count() or 1)),
    serve: Annotated[bool, typer.Option("--serve/--no-serve", help="Serve the API when set up.")] = True,
    port: Annotated[int, typer.Option("--port", min=1, max=65535)] = 8000,
) -> None:
    """Set up everything on the embedded defaults (world, indexes, features, default ranker); serve."""
    from data.layout import DataLayout
    from data.world.generate import generate_world
    from data.world.stats import world_stats
    from features.build import build_online_features
    from features.connection import connect
    from features.store import RedisFeatureStore
    from retrieval.system import build_world_index

    settings = state.settings()
    world = world or settings.data_dir / scale
    if (world / "world.json").is_file():
        console.print(f"using the existing world in {world}")
    else:
        with progress_bar() as report:
            generate_world(world, scale=scale, seed=settings.world.seed, workers=workers, progress=report)
    _print_stats(world_stats(world))
    with progress_bar() as report:
        indexes = build_world_index(world, settings.retrieval, progress=report)
    console.print({name: row["status"] for name, row in indexes.items()})
    store = RedisFeatureStore(connect(settings.features), settings.features)
    with progress_bar() as report:
        built = build_online_features(DataLayout(world), store, progress=report)
    where = settings.features.redis_url or f"the embedded Redis in {settings.features.embedded_dir}"
    console.print(f"features: {built['events']:,} events into {where} in {built['seconds']['total']} s")
    _user_embeddings(world, store)
    _default_ranker(world)
    if serve:
        from search.cli.serving import serve as run_server

        run_server(world=world, port=port)


def _user_embeddings(world: Path, store: RedisFeatureStore) -> None:
    """M3 user and block vectors into the (just rebuilt) store: the current model's when it was trained on
    this world's blocks, else a new one, time-capped (``QUICKSTART_M3_SECONDS``) and compared with the
    baselines on fewer held-out clicks, to keep quickstart short. On logs too short for M3 the ranker's
    ``m3_*`` features stay missing."""
    from data.layout import DataLayout
    from features.embeddings.errors import NotEnoughData
    from features.embeddings.pipeline import train_user_embeddings, write_current_vectors

    settings = state.settings().embeddings
    if not settings.as_of:
        # The ranker trains without M3 inputs then (embeddings.as_of is off by default: see docs/features.md),
        # so serving vectors would only cost quickstart time.
        console.print("M3: skipped (embeddings.as_of is off: the ranker does not use M3 features)")
        return
    started = time.perf_counter()
    reused = write_current_vectors(DataLayout(world), store, settings)
    if reused is not None:
        console.print(
            f"M3: wrote the vectors of the current model {reused['version']} ({reused['written']} keys)"
        )
        return
    quick = settings.model_copy(
        update={
            "max_train_seconds": settings.max_train_seconds or QUICKSTART_M3_SECONDS,
            "baseline_table": "m3",  # no second (mean-encoder) training for the baselines
            "eval_max_events": min(settings.eval_max_events, 5000),
        }
    )
    try:
        with progress_bar() as report:
            result = train_user_embeddings(DataLayout(world), quick, store, progress=report)
    except NotEnoughData as exc:
        console.print(f"M3 skipped ({exc}): the ranker's m3_* features stay missing")
        return
    recall = {m: round(r[f"recall@{quick.eval_k}"], 4) for m, r in result["metrics"].items()}
    console.print(
        f"M3 {result['version']}: recall@{quick.eval_k} {recall}; wrote {result['written']} vectors "
        f"in {time.perf_counter() - started:.0f} s"
    )


def _default_ranker(world: Path) -> None:
    """Train LightGBM (quick, strong on these features) and promote it when the line has no model yet."""
    from ranking.pipeline import train_world_ranker
    from ranking.registry import ModelRegistry
    from ranking.world import WorldSource

    settings = state.settings()
    ranking = settings.ranking
    registry = ModelRegistry(
        ranking.registry_dir, tolerance=ranking.tolerance, metric=ranking.promotion_metric
    )
    if "ranker" in registry.lines() and registry.current("ranker") is not None:
        console.print(f"using the promoted ranker {registry.current('ranker')} in {ranking.registry_dir}")
        return
    with progress_bar() as report:
        source = WorldSource(
            world, ranking.world, settings.features, progress=report, embeddings=settings.embeddings
        )
        source.table()
    version, _ = train_world_ranker("lgbm", source, ranking, registry)
    # Nothing is promoted yet, so there is no current model to validate against.
    registry.promote("ranker", version, force=True)
    console.print(f"trained and promoted ranker {version} (lgbm) in {ranking.registry_dir}")


def _print_counts(counts: dict) -> None:
    table = Table(title="counts")
    table.add_column("what")
    table.add_column("count", justify="right")
    for k, v in counts.items():
        table.add_row(k, f"{v:,}" if isinstance(v, int) else str(v))
    console.print(table)


def _print_stats(result: dict) -> None:
    console.print(f"world: {result['world']}")
    _print_counts(result["counts"])
    ctr = Table(title="CTR by position")
    ctr.add_column("position", justify="right")
    ctr.add_column("CTR", justify="right")
    ctr.add_column("randomized CTR / top", justify="right")
    for k, (c, r) in enumerate(
        zip(result["ctr_by_position"], result["randomized_ctr_ratio_to_top"], strict=True)
    ):
        ctr.add_row(str(k + 1), f"{c:.4f}", f"{r:.3f}")
    console.print(ctr)
    console.print(f"query click entropy (bits): {result['query_click_entropy_bits']}")
    for title, key in (
        ("by query click entropy", "oracle_by_entropy"),
        ("by user diversity", "oracle_by_diversity"),
    ):
        table = Table(title=f"NDCG@page {title}")
        for col in ("bucket", "impressions", "logging", "non-personal oracle", "personal oracle", "gain"):
            table.add_column(col, justify="right")
        for bucket, row in result[key].items():
            table.add_row(
                bucket,
                f"{row['impressions']:,}",
                *(
                    "-" if row[m] is None else f"{row[m]:.4f}"
                    for m in (
                        "ndcg@page_logging",
                        "ndcg@page_nonpersonal_oracle",
                        "ndcg@page_personal_oracle",
                        "personalization_gain",
                    )
                ),
            )
        console.print(table)
