"""``smartblock simulate traffic``: the world's users against a running search API, over real HTTP.

The simulation modules (numpy, httpx, the world simulator) load inside the command, so ``smartblock --help``
stays fast.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from search.cli.common import console, print_json, progress_bar

if TYPE_CHECKING:
    from search.jobs.results import TrafficReport

app = typer.Typer(help="Closed-loop simulations against a running search API.", no_args_is_help=True)


def register(root: typer.Typer) -> None:
    """Add the ``simulate`` group to the root app."""
    root.add_typer(app, name="simulate")


@app.command()
def traffic(
    world: Annotated[
        Path, typer.Option("--world", help="The simulated world the server serves (rebuilt from world.json).")
    ],
    url: Annotated[str, typer.Option("--url", help="Base URL of the search API.")] = "http://127.0.0.1:8000",
    users: Annotated[
        int, typer.Option("--users", min=1, help="Users in the panel, drawn by activity.")
    ] = 100,
    minutes: Annotated[
        float, typer.Option("--minutes", min=0.0, help="Wall-clock budget (0: no limit).")
    ] = 1.0,
    sessions: Annotated[
        int | None, typer.Option("--sessions", min=1, help="Stop after this many sessions.")
    ] = None,
    concurrency: Annotated[
        int, typer.Option("--concurrency", "-c", min=1, max=256, help="Sessions played at once.")
    ] = 4,
    seed: Annotated[int, typer.Option("--seed", min=0, help="Seed of the panel, sessions and clicks.")] = 0,
    page_size: Annotated[
        int | None,
        typer.Option("--page-size", "-k", min=1, help="k of /search (default: the click model's page)."),
    ] = None,
    think: Annotated[
        float, typer.Option("--think", min=0.0, help="Seconds between a session's queries.")
    ] = 0.0,
    uniform_users: Annotated[
        bool,
        typer.Option("--uniform-users", help="Spread sessions evenly over the panel instead of by activity."),
    ] = False,
    timeout: Annotated[float, typer.Option("--timeout", min=0.1, help="Seconds per HTTP request.")] = 30.0,
    allow_errors: Annotated[
        bool, typer.Option("--allow-errors", help="Exit 0 even when some requests failed.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Play the world's users against the API: POST /search per query, clicks and dwell from the world's
    click model to /events. Reports throughput, client-side latency and, per experiment variant, CTR and
    the true utility of the shown pages. Exits 1 when a request failed (unless --allow-errors)."""
    from search.experiments.traffic import TrafficOptions, simulate_traffic
    from search.jobs.results import TrafficReport

    options = TrafficOptions(
        url=url,
        users=users,
        minutes=minutes,
        sessions=sessions,
        concurrency=concurrency,
        seed=seed,
        page_size=page_size,
        think_s=think,
        uniform_users=uniform_users,
        timeout_s=timeout,
    )
    with progress_bar(not as_json) as report:
        result = TrafficReport.model_validate(simulate_traffic(world, options, progress=report))
    if as_json:
        print_json(result.to_json())
    else:
        _print(result)
    if result.errors and not allow_errors:
        raise typer.Exit(1)


def _print(result: TrafficReport) -> None:
    lat = result.search_latency_ms
    console.print(
        f"{result.sessions} sessions, {result.searches} searches, {result.clicks} clicks, "
        f"{result.errors} errors ({result.events_retried} event batches sent again after a 503) in "
        f"{result.elapsed_s} s: {result.searches_per_s} searches/s, "
        f"/search p50 {lat.p50} ms, p99 {lat.p99} ms (client side)"
    )
    if result.unknown_blocks or result.unknown_queries:
        console.print(
            f"[yellow]ignored {result.unknown_blocks} served blocks and {result.unknown_queries} "
            "queries the world does not know (is the server serving this world?)[/]"
        )
    for sample in result.error_samples:
        console.print(f"[red]error:[/] {sample}", highlight=False)
    k = result.page_size
    table = Table(title="per variant; util: the true utility of the shown pages (the simulator knows it)")
    # Short headers: the table must stay readable in an 80-column terminal.
    for col in ("exp", "variant", "ranker", "searches", "clicks", "ctr", f"util@{k}", "examined", "gain"):
        table.add_column(col, justify="right")
    for v in result.variants:
        table.add_row(
            v.experiment,
            v.variant,
            ", ".join(v.ranker_versions),
            str(v.searches),
            str(v.clicks),
            f"{v.ctr:.4f}",
            f"{v.utility:.4f}",
            f"{v.examined_utility:.4f}",
            "-" if v.gain_captured is None else f"{v.gain_captured:.3f}",
        )
    console.print(table)
