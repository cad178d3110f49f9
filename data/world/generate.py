"""Write a whole simulated world to a folder: catalogue, day-partitioned logs, and ``truth/``.

The catalogue's text (docs and blocks), the truth tables and each day are written one task each: in this
process (``workers`` 1), or on the engine (``data.engine``): a local Dask cluster of ``workers`` processes,
or the running cluster at ``engine.address``. Each task is a pure function of the world and the seed (and a
day's index), so a rerun of a lost task writes the same bytes. The world travels to each worker once
(scattered); the catalogue's text, the largest task, starts first, and the days' counts come back in day
order. On a running cluster the workers write into ``out`` themselves: it must be a folder they share at
that path.
"""

from __future__ import annotations

import json
import os
import shutil
from datetime import date, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from data.contracts import Block, Doc, Interaction, SearchImpression
from data.days import Progress
from data.engine import EngineSettings, optional_engine_client
from data.errors import ConfigError
from data.io import write_table
from data.layout import DataLayout
from data.world.population import build_population, mean_affinity, truth_users
from data.world.queries import build_query_book, truth_queries
from data.world.scales import SCALES, WorldScale
from data.world.sim_catalog import build_catalog, text_tables, truth_blocks
from data.world.state import World
from data.world.taxonomy import DOMAINS, GENRES
from data.world.traffic import simulate_day

if TYPE_CHECKING:
    from distributed import Client

FORMAT_VERSION = 1

# In each engine worker process: the days it wrote (read with ``client.run(days_written)``).
_WORKER_DAYS: list[int] = []


def build_world(scale: WorldScale, seed: int) -> World:
    catalog_seed, population_seed = np.random.SeedSequence(seed).spawn(2)
    catalog = build_catalog(scale, np.random.default_rng(catalog_seed))
    population = build_population(scale.users, np.random.default_rng(population_seed))
    mean_facet, mean_genre = mean_affinity(population)
    return World(
        scale=scale,
        catalog=catalog,
        population=population,
        queries=build_query_book(catalog),
        block_ids=catalog.block_ids(),
        doc_ids=catalog.doc_ids(),
        user_ids=population.user_ids(),
        mean_facet_affinity=mean_facet,
        mean_genre_affinity=mean_genre,
    )


def _write_catalogue(world: World, seed: int, layout: DataLayout) -> dict[str, int]:
    """Docs and blocks with their generated text; their row counts."""
    rng = np.random.default_rng(np.random.SeedSequence(seed).spawn(3)[2])
    docs, blocks = text_tables(world.catalog, rng)
    write_table(docs, layout.root / "docs.parquet", Doc)
    write_table(blocks, layout.root / "blocks.parquet", Block)
    return {"docs": docs.num_rows, "blocks": blocks.num_rows}


def _write_day(world: World, seed: int, layout: DataLayout, day: int) -> dict[str, int]:
    log = simulate_day(world, day, seed)
    when = date.fromisoformat(world.scale.start_date) + timedelta(days=day)
    write_table(log.impressions, layout.day_dir("impressions", when) / "part-0.parquet", SearchImpression)
    write_table(log.interactions, layout.day_dir("interactions", when) / "part-0.parquet", Interaction)
    _write_plain(log.grades, layout.truth / "grades" / f"day={when.isoformat()}" / "part-0.parquet")
    clicks = int(pc.sum(pc.equal(log.interactions["type"], "click")).as_py() or 0)
    return {"impressions": log.impressions.num_rows, "shown": log.grades.num_rows, "clicks": clicks}


def _day_task(world: World, seed: int, out: str, day: int) -> tuple[int, dict[str, int]]:
    """A task on an engine worker: write ``day`` into ``out``; (this worker's pid, the day's counts)."""
    counts = _write_day(world, seed, DataLayout(Path(out)), day)
    _WORKER_DAYS.append(day)
    return os.getpid(), counts


def _catalogue_task(world: World, seed: int, out: str) -> dict[str, int]:
    return _write_catalogue(world, seed, DataLayout(Path(out)))


def _truth_task(world: World, out: str) -> None:
    _write_truth(world, DataLayout(Path(out)))


def days_written() -> list[int]:
    """The days this worker process wrote (``client.run(days_written)`` asks every worker)."""
    return list(_WORKER_DAYS)


def _write_plain(table: pa.Table, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path, compression="zstd")


def generate_world(
    out: Path,
    *,
    scale: str | WorldScale = "small",
    seed: int = 42,
    workers: int = 1,
    engine: EngineSettings | None = None,
    overwrite: bool = False,
    progress: Progress | None = None,
) -> dict:
    """Generate a world into ``out`` and return its manifest. Same scale and seed, same bytes.

    The catalogue's text, the truth tables and the days run on the engine: the cluster at ``engine.address``
    when set, else (``workers`` > 1) a local cluster of ``workers`` processes (``engine``'s other settings
    kept); ``workers`` 1: in this process.
    """
    if isinstance(scale, str):
        if scale not in SCALES:
            raise ConfigError(f"unknown scale '{scale}' (expected one of {', '.join(SCALES)})")
        scale = SCALES[scale]
    out = Path(out)
    _holds_a_world(out, overwrite)  # refused before a cluster starts
    settings = _engine_settings(engine, workers)
    # The engine first: a cluster that cannot be reached fails the job before `out` is touched.
    with optional_engine_client(settings) as client:
        world, totals = _generate(out, scale, seed, overwrite, client, progress)

    cat = world.catalog
    manifest = {
        "format": FORMAT_VERSION,
        "generator": "smartblock.world",
        "scale": scale.name,
        "seed": seed,
        "start_date": scale.start_date,
        "days": scale.days,
        "counts": {
            "docs": totals.pop("docs"),
            "blocks": totals.pop("blocks"),
            "new_blocks": int((cat.block_created_day >= 0).sum()),
            "users": world.population.n_users,
            "queries": len(world.queries.strings),
            **totals,
        },
    }
    DataLayout(out).manifest.write_text(
        json.dumps(manifest, indent=2, sort_keys=True) + "\n", encoding="utf-8"
    )
    return manifest


def _holds_a_world(out: Path, overwrite: bool) -> bool:
    """Whether ``out`` holds a world that ``overwrite`` allows replacing; False: it is empty or absent."""
    if not (out.exists() and any(out.iterdir())):
        return False
    if not overwrite:
        raise ConfigError(f"{out} is not empty; replace it with --overwrite (overwrite=True from Python)")
    if not (out / "world.json").is_file():
        raise ConfigError(f"{out} is not empty and holds no world.json: refusing to delete it")
    return True


def _generate(
    out: Path,
    scale: WorldScale,
    seed: int,
    overwrite: bool,
    client: Client | None,
    progress: Progress | None,
) -> tuple[World, dict[str, int]]:
    """Write the catalogue, truth and days into ``out``; the world and its counts (docs, blocks, days)."""
    if _holds_a_world(out, overwrite):
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    report = progress or (lambda stage, done, total: None)
    layout = DataLayout(out)

    world = build_world(scale, seed)
    totals = {"impressions": 0, "shown": 0, "clicks": 0}
    days = list(range(scale.days))
    if client is None:
        report("catalogue", 0, 1)
        totals.update(_write_catalogue(world, seed, layout))
        report("catalogue", 1, 1)
        _write_truth(world, layout)
        for done, day in enumerate(days, start=1):
            _add(totals, _write_day(world, seed, layout, day))
            report("days", done, len(days))
    else:
        _on_engine(client, world, seed, layout, days, totals, report)
    return world, totals


def _engine_settings(engine: EngineSettings | None, workers: int) -> EngineSettings | None:
    """Where the world is written: a running cluster, a local one of ``workers`` processes, or None (here)."""
    if engine is not None and engine.address is not None:
        return engine
    if workers <= 1:
        return None
    return (engine or EngineSettings()).model_copy(update={"workers": workers})


def _on_engine(
    client: Client,
    world: World,
    seed: int,
    layout: DataLayout,
    days: list[int],
    totals: dict[str, int],
    report: Progress,
) -> None:
    """The catalogue's text, the truth tables and one task per day on ``client``'s workers, side by side.

    The catalogue's text is the longest task (about 15 s of the large world's 94 s in one process) and the
    days do not read it, so it starts first and the days fill the other workers meanwhile; the counts are
    added up in day order.
    """
    [shared] = client.scatter([world], broadcast=True, hash=False)
    out = str(layout.root.resolve())
    report("catalogue", 0, 1)
    catalogue = client.submit(_catalogue_task, shared, seed, out, pure=False, priority=1)
    truth = client.submit(_truth_task, shared, out, pure=False)
    futures = [client.submit(_day_task, shared, seed, out, day, pure=False) for day in days]
    try:
        totals.update(catalogue.result())
        _must_see(layout.root / "docs.parquet", layout)  # a folder not shared fails now, not after the days
        report("catalogue", 1, 1)
        for done, future in enumerate(futures, start=1):
            _, counts = future.result()
            future.release()
            _add(totals, counts)
            report("days", done, len(days))
        truth.result()
    except BaseException:
        # On a running cluster the tasks would outlive this job and go on writing into `out`.
        client.cancel([catalogue, truth, *futures])
        raise
    when = date.fromisoformat(world.scale.start_date)
    for path in [layout.truth / "world_model.json"] + [
        layout.day_dir("impressions", when + timedelta(days=day)) / "part-0.parquet" for day in days
    ]:
        _must_see(path, layout)


def _must_see(path: Path, layout: DataLayout) -> None:
    """A file the engine's workers wrote must be where this process reads the world."""
    if not path.is_file():
        raise ConfigError(
            f"the engine's workers wrote {path.relative_to(layout.root)} where this process cannot see it: "
            f"{layout.root} must be a folder the cluster's workers share at the same path"
        )


def _add(totals: dict[str, int], counts: dict[str, int]) -> None:
    for k, v in counts.items():
        totals[k] += v


def _write_truth(world: World, layout: DataLayout) -> None:
    _write_plain(truth_blocks(world.catalog), layout.truth / "blocks.parquet")
    _write_plain(truth_users(world.population), layout.truth / "users.parquet")
    _write_plain(truth_queries(world.queries, world.catalog), layout.truth / "queries.parquet")
    model = {
        "click_model": world.scale.click_model.model_dump(),
        "epsilon": world.scale.epsilon,
        "domains": [{"name": d.name, "facets": list(d.facets)} for d in DOMAINS],
        "genres": list(GENRES),
        "domain_popularity": world.population.domain_popularity.tolist(),
        "scale": world.scale.model_dump(exclude={"click_model"}),
    }
    (layout.truth / "world_model.json").write_text(json.dumps(model, indent=2) + "\n", encoding="utf-8")
