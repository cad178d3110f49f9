"""Write a whole simulated world to a folder: catalogue, day-partitioned logs, and ``truth/``."""

from __future__ import annotations

import json
import multiprocessing
import shutil
from concurrent.futures import ProcessPoolExecutor
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from data.contracts import Block, Doc, Interaction, SearchImpression
from data.days import Progress
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

FORMAT_VERSION = 1

# Filled in the parent before forking, so worker processes share the world without pickling it.
_WORKER_STATE: dict[str, object] = {}


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


def _write_day(day: int) -> dict[str, int]:
    world: World = _WORKER_STATE["world"]  # type: ignore[assignment]
    seed: int = _WORKER_STATE["seed"]  # type: ignore[assignment]
    layout: DataLayout = _WORKER_STATE["layout"]  # type: ignore[assignment]
    log = simulate_day(world, day, seed)
    when = date.fromisoformat(world.scale.start_date) + timedelta(days=day)
    write_table(log.impressions, layout.day_dir("impressions", when) / "part-0.parquet", SearchImpression)
    write_table(log.interactions, layout.day_dir("interactions", when) / "part-0.parquet", Interaction)
    _write_plain(log.grades, layout.truth / "grades" / f"day={when.isoformat()}" / "part-0.parquet")
    clicks = int(pc.sum(pc.equal(log.interactions["type"], "click")).as_py() or 0)
    return {"impressions": log.impressions.num_rows, "shown": log.grades.num_rows, "clicks": clicks}


def _write_plain(table: pa.Table, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path, compression="zstd")


def generate_world(
    out: Path,
    *,
    scale: str | WorldScale = "small",
    seed: int = 42,
    workers: int = 1,
    overwrite: bool = False,
    progress: Progress | None = None,
) -> dict:
    """Generate a world into ``out`` and return its manifest. Same scale and seed, same bytes."""
    if isinstance(scale, str):
        if scale not in SCALES:
            raise ConfigError(f"unknown scale '{scale}' (expected one of {', '.join(SCALES)})")
        scale = SCALES[scale]
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise ConfigError(f"{out} is not empty; replace it with --overwrite (overwrite=True from Python)")
        if not (out / "world.json").is_file():
            raise ConfigError(f"{out} is not empty and holds no world.json: refusing to delete it")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    report = progress or (lambda stage, done, total: None)
    layout = DataLayout(out)

    world = build_world(scale, seed)
    report("catalogue", 0, 1)
    docs, blocks = text_tables(world.catalog, np.random.default_rng(np.random.SeedSequence(seed).spawn(3)[2]))
    write_table(docs, out / "docs.parquet", Doc)
    write_table(blocks, out / "blocks.parquet", Block)
    report("catalogue", 1, 1)
    _write_truth(world, layout)

    _WORKER_STATE.update(world=world, seed=seed, layout=layout)
    totals = {"impressions": 0, "shown": 0, "clicks": 0}
    days = list(range(scale.days))
    try:
        if workers > 1:
            ctx = multiprocessing.get_context("fork")
            with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
                for done, counts in enumerate(pool.map(_write_day, days), start=1):
                    _add(totals, counts)
                    report("days", done, len(days))
        else:
            for done, day in enumerate(days, start=1):
                _add(totals, _write_day(day))
                report("days", done, len(days))
    finally:
        _WORKER_STATE.clear()

    cat = world.catalog
    manifest = {
        "format": FORMAT_VERSION,
        "generator": "smartblock.world",
        "scale": scale.name,
        "seed": seed,
        "start_date": scale.start_date,
        "days": scale.days,
        "counts": {
            "docs": docs.num_rows,
            "blocks": blocks.num_rows,
            "new_blocks": int((cat.block_created_day >= 0).sum()),
            "users": world.population.n_users,
            "queries": len(world.queries.strings),
            **totals,
        },
    }
    layout.manifest.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return manifest


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
