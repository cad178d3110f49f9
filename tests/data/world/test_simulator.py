"""The simulated world has the properties its users rely on, and keeps truth apart from the logs."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from data.contracts import CONTRACTS
from data.errors import ConfigError
from data.layout import DataLayout
from data.schemas import arrow_schema
from data.world.generate import generate_world
from data.world.scales import SCALES
from data.world.stats import world_stats
from data.world.taxonomy import DOMAINS, check_taxonomy

TRUTH_ONLY_COLUMNS = {
    "grade",
    "utility",
    "relevance",
    "quality",
    "diversity",
    "drift",
    "facet_pref",
    "randomized",
}


@pytest.fixture(scope="module")
def stats(tiny_world: Path) -> dict:
    return world_stats(tiny_world)


# What other jobs keep inside a world folder (training-set caches, retrieval indexes): the session's shared
# tiny world may hold them by the time a test compares its generated files.
DERIVED = frozenset({".cache", "index"})


def _digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.relative_to(root).parts[0] not in DERIVED
    }


def test_taxonomy_is_well_formed() -> None:
    check_taxonomy()
    assert len(DOMAINS) >= 8


def test_every_public_file_validates_against_its_contract(tiny_world: Path) -> None:
    layout = DataLayout(tiny_world)
    docs, blocks = layout.read_docs(), layout.read_blocks()
    imps = layout.read_events("impressions")
    acts = layout.read_events("interactions")
    assert docs.num_rows > 0 and blocks.num_rows > 0 and imps.num_rows > 0 and acts.num_rows > 0
    doc_ids = set(docs["id"].to_pylist())
    assert all(set(ids) <= doc_ids for ids in blocks["doc_ids"].to_pylist())
    assert all(3 <= len(ids) <= 10 for ids in blocks["doc_ids"].to_pylist())


@pytest.mark.slow  # starts a local Dask cluster of 2 workers
def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path: Path, tiny_world: Path) -> None:
    again = tmp_path / "again"
    generate_world(again, scale="tiny", seed=7, workers=2)  # days on a 2-worker local cluster: same bytes
    assert _digest(again) == _digest(tiny_world)
    other = tmp_path / "other"
    generate_world(other, scale="tiny", seed=8)
    assert _digest(other)["docs.parquet"] != _digest(tiny_world)["docs.parquet"]


def test_existing_world_is_not_overwritten_silently(tiny_world: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not empty"):
        generate_world(tiny_world, scale="tiny", seed=7)
    stranger = tmp_path / "stranger"
    stranger.mkdir()
    (stranger / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match=r"holds no world\.json"):
        generate_world(stranger, scale="tiny", seed=7, overwrite=True)
    with pytest.raises(ConfigError, match="unknown scale"):
        generate_world(tmp_path / "x", scale="huge", seed=7)


def test_ctr_falls_with_position_as_theta_says(stats: dict) -> None:
    ctr = stats["ctr_by_position"]
    assert ctr[0] > ctr[1] > ctr[2] and ctr[0] > 5 * ctr[-1]
    theta = SCALES["tiny"].click_model.theta
    # On randomized pages position is independent of the block: CTR ratios estimate theta_k / theta_1.
    ratio = stats["randomized_ctr_ratio_to_top"]
    assert np.allclose(ratio, np.asarray(theta) / theta[0], atol=0.15), ratio
    assert np.mean(ratio[4:]) < np.mean(ratio[1:4]) < 1.0


def test_query_click_entropy_spans_a_wide_range(stats: dict) -> None:
    ent = stats["query_click_entropy_bits"]
    assert ent["queries"] >= 50
    assert ent["p0"] < 1.0 and ent["p100"] > 3.0 and ent["p90"] - ent["p10"] > 1.5


def test_oracle_gains_more_on_high_entropy_queries_and_diverse_users(stats: dict) -> None:
    by_entropy, by_diversity = stats["oracle_by_entropy"], stats["oracle_by_diversity"]
    assert by_entropy["high"]["personalization_gain"] > 3 * by_entropy["low"]["personalization_gain"]
    assert by_entropy["high"]["personalization_gain"] > by_entropy["mid"]["personalization_gain"]
    assert (
        by_diversity["diverse"]["personalization_gain"]
        > 1.2 * by_diversity["focused"]["personalization_gain"]
    )
    for row in (*by_entropy.values(), *by_diversity.values()):
        assert row["impressions"] > 200
        assert row["ndcg@page_nonpersonal_oracle"] <= row["ndcg@page_personal_oracle"]


def test_co_queries_in_a_session_share_topics_far_above_chance(tiny_world: Path) -> None:
    layout = DataLayout(tiny_world)
    imps = layout.read_events("impressions", validate_rows=False).sort_by(
        [("session_id", "ascending"), ("ts", "ascending")]
    )
    truth = pq.read_table(layout.truth / "queries.parquet")
    entity_of = dict(zip(truth["query"].to_pylist(), truth["entity"].to_pylist(), strict=True))
    sessions = imps["session_id"].to_numpy(zero_copy_only=False)
    entities = np.array([entity_of[q] for q in imps["query"].to_pylist()], dtype=object)
    same_session = sessions[1:] == sessions[:-1]
    together = (entities[1:] == entities[:-1])[same_session].mean()
    rng = np.random.default_rng(0)
    a, b = rng.integers(0, len(entities), (2, 20_000))
    chance = (entities[a] == entities[b]).mean()
    assert together > 0.5 and together > 10 * chance, (together, chance)


def test_blocks_appear_over_time_and_are_never_shown_before_they_exist(tiny_world: Path) -> None:
    layout = DataLayout(tiny_world)
    manifest = layout.read_manifest()
    assert manifest["counts"]["new_blocks"] > 0
    blocks = layout.read_blocks(validate_rows=False)
    created = dict(zip(blocks["id"].to_pylist(), blocks["created_at"].to_pylist(), strict=True))
    imps = layout.read_events("impressions", validate_rows=False)
    first_shown: dict[str, object] = {}
    for ts, shown in zip(imps["ts"].to_pylist(), imps["shown"].to_pylist(), strict=True):
        for item in shown:
            assert created[item["block_id"]] <= ts
            first_shown.setdefault(item["block_id"], ts)
    start = imps["ts"].to_pylist()[0]
    assert any(created[b] > start for b in first_shown), "no cold-start block was ever shown"


def test_interactions_point_at_what_was_shown(tiny_world: Path) -> None:
    layout = DataLayout(tiny_world)
    imps = layout.read_events("impressions", validate_rows=False)
    shown = {
        (r, s["block_id"], s["position"]): ts
        for r, ts, items in zip(
            imps["request_id"].to_pylist(), imps["ts"].to_pylist(), imps["shown"].to_pylist(), strict=True
        )
        for s in items
    }
    acts = layout.read_events("interactions", validate_rows=False)
    for r, b, p, ts in zip(
        acts["request_id"].to_pylist(),
        acts["block_id"].to_pylist(),
        acts["position"].to_pylist(),
        acts["ts"].to_pylist(),
        strict=True,
    ):
        assert shown[(r, b, p)] < ts
    n_click = pc.sum(pc.equal(acts["type"], "click")).as_py()
    assert n_click == acts.num_rows - n_click  # every click is followed by one dwell record


def test_propensities_are_the_policys_marginals(tiny_world: Path) -> None:
    imps = DataLayout(tiny_world).read_events("impressions", validate_rows=False)
    flat = pc.list_flatten(imps["shown"])
    prop = pc.struct_field(flat, "propensity").to_numpy()
    eps = SCALES["tiny"].epsilon
    n = np.repeat(imps["n_candidates"].to_numpy(), pc.list_value_length(imps["shown"]).to_numpy())
    # Either the deterministic slot (1 - eps + eps/n) or only the uniform share (eps/n).
    assert np.all(np.isclose(prop, eps / n) | np.isclose(prop, 1 - eps + eps / n))


def test_truth_stays_in_truth(tiny_world: Path) -> None:
    layout = DataLayout(tiny_world)
    public = [p for p in tiny_world.rglob("*.parquet") if layout.truth not in p.parents]
    assert public
    for path in public:
        names = set(pq.read_schema(path).names)
        assert not names & TRUTH_ONLY_COLUMNS, path
        contract = (
            "impressions"
            if "impressions" in path.parts
            else "interactions"
            if "interactions" in path.parts
            else path.stem
        )
        assert pq.read_schema(path).remove_metadata().equals(arrow_schema(CONTRACTS[contract])), path
    manifest = json.loads(layout.manifest.read_text())
    assert not set(json.dumps(manifest).split('"')) & TRUTH_ONLY_COLUMNS
    assert (layout.truth / "grades").is_dir() and (layout.truth / "users.parquet").is_file()


def test_grades_cover_every_shown_block(tiny_world: Path) -> None:
    layout = DataLayout(tiny_world)
    grades = pq.read_table(layout.truth / "grades")
    imps = layout.read_events("impressions", validate_rows=False)
    assert grades.num_rows == pc.sum(pc.list_value_length(imps["shown"])).as_py()
    counts = np.bincount(grades["grade"].to_numpy(), minlength=5)
    assert (counts > 0).all(), counts  # every grade 0-4 occurs
    assert pa.types.is_int8(grades.schema.field("grade").type)
