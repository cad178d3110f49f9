"""``smartblock`` commands of the retrieval stage: build indexes, retrieve, evaluate.

Heavy modules (torch, transformers, the JVM) are imported inside the commands, so ``smartblock --help``
stays fast and starts nothing.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from data.errors import ConfigError
from search.cli.common import ClusterOption, console, on_cluster, print_json, progress_bar, state

index_app = typer.Typer(help="Build the retrieval indexes of a world.", no_args_is_help=True)
retrieval_app = typer.Typer(help="Evaluate the retrievers.", no_args_is_help=True)

WorldOption = Annotated[
    Path | None, typer.Option("--world", help="World folder (default: <data_dir>/<world.scale>).")
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout.")]


def _offline() -> None:
    # Models come from wheels or local folders; a run must never reach for the hub.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def _world(world: Path | None) -> Path:
    settings = state.settings()
    world = world or settings.data_dir / settings.world.scale
    if not (world / "world.json").is_file():
        raise ConfigError(
            f"{world} is not a world folder (no world.json); generate one with `world generate`"
        )
    return world


@index_app.command("build")
def build(world: WorldOption = None, cluster: ClusterOption = None, as_json: JsonOption = False) -> None:
    """Index a world's blocks (SPLADE impact index, dense FAISS); stale indexes are rebuilt, current kept.

    Passages are encoded on the engine (a local Dask cluster, or --cluster) when that is faster.
    """
    _offline()
    from retrieval.system import build_world_index, index_root

    world = _world(world)
    root = on_cluster(state.settings(), cluster)
    settings = root.retrieval
    with progress_bar(not as_json) as report:
        result = build_world_index(world, settings, progress=report, engine=root.engine)
    if as_json:
        print_json(result)
        return
    table = Table(title=f"indexes in {index_root(world, settings)}")
    for col in ("index", "status", "passages", "seconds", "passages/s", "encoded"):
        table.add_column(col, justify="right" if col not in {"index", "encoded"} else "left")
    for name, row in result.items():
        rate = "-" if row["passages_per_second"] is None else f"{row['passages_per_second']:,.0f}"
        table.add_row(
            name, row["status"], f"{row['passages']:,}", f"{row['seconds']:.1f}", rate, row["engine"] or "-"
        )
    console.print(table)


def retrieve(
    query: Annotated[str, typer.Argument(help="The search query.")],
    k: Annotated[int, typer.Option("-k", "--k", min=1, max=1000, help="Blocks to return.")] = 20,
    world: WorldOption = None,
    as_json: JsonOption = False,
) -> None:
    """Fused candidate blocks for a query, with each retriever's score (needs `index build` first)."""
    _offline()
    from retrieval.system import load_world_retrievers

    world = _world(world)
    retrievers = load_world_retrievers(world, state.settings().retrieval)
    hits = retrievers["fused"].search(query, k)
    members = [n for n in retrievers if n != "fused"]
    if as_json:
        print_json(
            {
                "query": query,
                "hits": [{"block_id": h.id, "score": round(h.score, 6), "sources": h.sources} for h in hits],
            }
        )
        return
    titles = _block_titles(world)
    table = Table(title=f"{len(hits)} blocks for {query!r}")
    for col in ("#", "block", "title", "fused", *members):
        table.add_column(col, justify="left" if col in {"block", "title"} else "right")
    for rank, h in enumerate(hits, start=1):
        per = [f"{h.sources[m]:.3f}" if m in h.sources else "-" for m in members]
        table.add_row(str(rank), h.id, titles.get(h.id, ""), f"{h.score:.3f}", *per)
    console.print(table)


def _block_titles(world: Path) -> dict[str, str]:
    from data.layout import DataLayout

    blocks = DataLayout(world).read_blocks(validate_rows=False).select(["id", "title"])
    return dict(zip(blocks["id"].to_pylist(), blocks["title"].to_pylist(), strict=True))


@retrieval_app.command("eval")
def evaluate(
    world: Annotated[Path | None, typer.Option("--world", help="Evaluate on a simulated world.")] = None,
    beir: Annotated[Path | None, typer.Option("--beir", help="Evaluate on a BEIR-layout folder.")] = None,
    index_dir: Annotated[
        Path | None,
        typer.Option("--index-dir", help="Where BEIR indexes go (default: <data_dir>/indexes/<name>)."),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """World: recall@10/50/100 of truly good blocks. BEIR: nDCG@10 and recall@100 on the test split."""
    _offline()
    if (world is None) == (beir is None):
        raise ConfigError("give exactly one of --world DIR or --beir DIR")
    settings = state.settings()
    with progress_bar(not as_json) as report:
        if world is not None:
            from retrieval.evaluate import evaluate_world

            result = evaluate_world(_world(world), settings.retrieval, progress=report)
        elif beir is not None:
            from retrieval.evaluate import evaluate_beir

            target = index_dir or settings.data_dir / "indexes" / beir.resolve().name
            result = evaluate_beir(beir, settings.retrieval, target, progress=report)
    if as_json:
        print_json(result)
        return
    meta = result.pop("_eval")
    metrics = [m for m in next(iter(result.values())) if "@" in m]
    table = Table(title="retrieval")
    table.add_column("system")
    for m in metrics:
        table.add_column(m, justify="right")
    for name, row in result.items():
        table.add_row(name, *(f"{row[m]:.4f}" for m in metrics))
    console.print(table)
    console.print(meta)


def register(app: typer.Typer) -> None:
    """Add this stage's commands and command groups to the root app."""
    app.add_typer(index_app, name="index")
    app.add_typer(retrieval_app, name="retrieval")
    app.command("retrieve")(retrieve)
