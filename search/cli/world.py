"""``smartblock world``: generate a simulated world and describe it."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from search.cli.common import ClusterOption, console, on_cluster, print_json, progress_bar, state
from search.jobs.results import WorldStats
from search.settings import Scale

if TYPE_CHECKING:
    from search.jobs.quickstart import DayPlan, QuickstartStep

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
        int | None,
        typer.Option(
            "--workers",
            min=1,
            help="Worker processes of the local Dask cluster writing the world (1: in this process). "
            "Default: engine.workers from world.engine_min_impressions logged impressions up, else 1.",
        ),
    ] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing world in OUT.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the manifest as JSON.")] = False,
    cluster: ClusterOption = None,
) -> None:
    """Write a world: docs, blocks, day-partitioned impressions and interactions, and truth/."""
    from data.world.generate import generate_world

    settings = on_cluster(state.settings(), cluster)
    scale = scale or settings.world.scale
    seed = settings.world.seed if seed is None else seed
    out = out or settings.data_dir / scale
    if workers is None:
        workers = settings.world.workers_for(scale, settings.engine)
    started = time.perf_counter()
    with progress_bar(not as_json) as report:
        manifest = generate_world(
            out,
            scale=scale,
            seed=seed,
            workers=workers,
            engine=settings.engine,
            overwrite=overwrite,
            progress=report,
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
    from search.jobs.quickstart import describe_world

    result = describe_world(world)
    if as_json:
        print_json(result.to_json())
        return
    _print_stats(result)


def quickstart(
    world: Annotated[
        Path | None, typer.Option("--world", help="World folder (default: <data_dir>/<scale>).")
    ] = None,
    scale: Annotated[Scale, typer.Option("--scale")] = "small",
    workers: Annotated[
        int | None,
        typer.Option(
            "--workers",
            min=1,
            help="Worker processes of the local Dask cluster generating the world. Default: engine.workers "
            "from world.engine_min_impressions logged impressions up, else 1.",
        ),
    ] = None,
    serve: Annotated[bool, typer.Option("--serve/--no-serve", help="Serve the API when set up.")] = True,
    port: Annotated[int, typer.Option("--port", min=1, max=65535)] = 8000,
    cluster: ClusterOption = None,
) -> None:
    """Set up everything on the embedded defaults (world, indexes, features, default ranker); serve."""
    from search.jobs.quickstart import quickstart as run

    settings = on_cluster(state.settings(), cluster)
    started = last = time.perf_counter()

    def print_step(step: QuickstartStep) -> None:
        nonlocal last
        _print_step(step)
        now = time.perf_counter()
        console.print(f"[dim]  step {now - last:.1f} s, quickstart {now - started:.1f} s[/]")
        last = now

    with progress_bar() as report:
        result = run(settings, world=world, scale=scale, workers=workers, progress=report, on_step=print_step)
    if serve:
        from search.cli.serving import serve as run_server

        run_server(world=result.world.path, port=port)


def _print_step(step: QuickstartStep) -> None:
    from search.jobs import quickstart as qs

    match step:
        case qs.WorldReady(path=path, generated=False):
            console.print(f"using the existing world in {path}")
        case qs.WorldReady():
            console.print(f"generated the world in {step.path}")
        case WorldStats():
            _print_stats(step)
        case qs.IndexesBuilt():
            console.print(step.status)
        case qs.FeaturesBuilt():
            console.print(
                f"features: {step.build.events:,} events into {step.store} in {step.build.seconds.total} s"
            )
        case qs.EmbeddingsOutcome(status="off"):
            console.print(f"M3: skipped ({step.reason})")
        case qs.EmbeddingsOutcome(status="skipped"):
            console.print(f"M3: skipped ({step.reason}): the ranker's m3_* features stay missing")
        case qs.EmbeddingsOutcome(status="reused"):
            console.print(f"M3: wrote the vectors of the current model {step.version} ({step.written} keys)")
        case qs.EmbeddingsOutcome(run=run) if run is not None:
            _print_plan("M3", step.plan)
            recall = {m: round(r.recall, 4) for m, r in run.metrics.items()}
            k = next(iter(run.metrics.values())).k
            console.print(
                f"M3 {run.version}: recall@{k} {recall}; wrote {run.written} vectors in {step.seconds:.0f} s"
            )
        case qs.RankerOutcome(trained=False):
            console.print(f"using the promoted ranker {step.version} in {step.registry_dir}")
        case qs.RankerOutcome():
            _print_plan("ranker", step.plan)
            if step.replaced is not None:
                version, origin = step.replaced
                console.print(f"the current ranker {version} was not trained on this world's logs ({origin})")
            console.print(
                f"trained and promoted ranker {step.version} ({step.model}) in {step.registry_dir}: "
                f"training set {step.table_seconds:.1f} s, training {step.train_seconds:.1f} s"
            )


def _print_plan(what: str, plan: DayPlan | None) -> None:
    if plan is not None and plan.fitted:
        console.print(f"{what}: the configured day split does not fit, using {plan.describe()}")


def _print_counts(counts: dict) -> None:
    table = Table(title="counts")
    table.add_column("what")
    table.add_column("count", justify="right")
    for k, v in counts.items():
        table.add_row(k, f"{v:,}" if isinstance(v, int) else str(v))
    console.print(table)


def _print_stats(result: WorldStats) -> None:
    world = result.world
    console.print(f"world: {world.scale}, seed {world.seed}, {world.days} days from {world.start_date}")
    _print_counts(result.counts)
    ctr = Table(title="CTR by position")
    ctr.add_column("position", justify="right")
    ctr.add_column("CTR", justify="right")
    ctr.add_column("randomized CTR / top", justify="right")
    for k, (c, r) in enumerate(zip(result.ctr_by_position, result.randomized_ctr_ratio_to_top, strict=True)):
        ctr.add_row(str(k + 1), f"{c:.4f}", f"{r:.3f}")
    console.print(ctr)
    console.print(f"query click entropy (bits): {result.query_click_entropy_bits.to_json()}")
    for title, buckets in (
        ("by query click entropy", result.oracle_by_entropy),
        ("by user diversity", result.oracle_by_diversity),
    ):
        table = Table(title=f"NDCG@page {title}")
        for col in ("bucket", "impressions", "logging", "non-personal oracle", "personal oracle", "gain"):
            table.add_column(col, justify="right")
        for bucket, row in buckets.items():
            values = (
                row.ndcg_logging,
                row.ndcg_nonpersonal_oracle,
                row.ndcg_personal_oracle,
                row.personalization_gain,
            )
            table.add_row(bucket, f"{row.impressions:,}", *("-" if v is None else f"{v:.4f}" for v in values))
        console.print(table)
