"""Online analysis: the statistics against known answers, and analyze() on synthetic event folders written
with data.io, where the truth (which variant clicks more) is set by construction."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from data.contracts import Interaction, SearchImpression, ShownBlock
from data.io import write_records
from data.layout import DataLayout
from search.experiments.analysis import _Page, analyze, analyze_one, load_pages
from search.experiments.stats import compare, ratio, sample_ratio, sign_test
from serving.experiments.assignment import Assigner
from serving.experiments.config import parse_config
from serving.experiments.interleaving import credit, team_draft

CONFIG = """
holdback: {percent: 10, salt: hb}
layers:
  - name: ranking
    salt: ranking-salt
    experiments:
      - name: ab
        traffic: 70
        control: control
        variants:
          - {name: control, weight: 50, settings: {ranker: retrieval-order}}
          - {name: treatment, weight: 50, settings: {ranker: ranker}}
      - name: inter
        traffic: 30
        variants:
          - {name: a-vs-b, weight: 100, interleave: {a: ranker, b: dasalc}}
"""
DAY0 = datetime(2026, 1, 5, 8, tzinfo=UTC)


# Statistics ------------------------------------------------------------------------------------------------


def test_delta_method_ci_covers_the_true_ratio_at_the_nominal_rate() -> None:
    """Users with their own click rate and activity: the true CTR is E[n p] / E[n] = 0.2 (n, p independent).
    A 95% CI must cover it in ~95% of replications; the naive impression-level binomial CI, which ignores
    that a user's impressions move together, covers far less often."""
    rng = np.random.default_rng(0)
    reps, users, covered, naive_covered = 400, 400, 0, 0
    for _ in range(reps):
        n = 1 + rng.poisson(6, users)
        p = rng.beta(1, 4, users)  # mean 0.2, strongly heterogeneous users
        clicks = rng.binomial(n, p)
        r = ratio(clicks, n)
        lo, hi = r.ci
        covered += lo <= 0.2 <= hi
        se = np.sqrt(r.value * (1 - r.value) / n.sum())
        naive_covered += r.value - 1.96 * se <= 0.2 <= r.value + 1.96 * se
    assert 0.92 <= covered / reps <= 0.98
    assert naive_covered / reps < 0.85


def test_ratio_and_compare_on_a_hand_computed_case() -> None:
    r = ratio(np.array([1.0, 3.0]), np.array([2.0, 2.0]))
    assert r.value == pytest.approx(1.0)
    # s_Y^2 = 2, s_N^2 = 0, cov = 0 -> Var = 2 / (2 * 2^2) = 0.25
    assert r.variance == pytest.approx(0.25)
    assert r.ci == pytest.approx((1 - 1.959964 * 0.5, 1 + 1.959964 * 0.5), rel=1e-5)
    same = compare(r, r)
    assert same.lift == 0 and same.p_value == pytest.approx(1.0)
    assert ratio(np.array([]), np.array([])).value != ratio(np.array([]), np.array([])).value  # NaN


def test_sample_ratio_mismatch_flags_a_skewed_split_and_passes_a_fair_one() -> None:
    weights = {"control": 50, "treatment": 50}
    assert not sample_ratio({"control": 5030, "treatment": 4970}, weights).mismatch
    skewed = sample_ratio({"control": 5300, "treatment": 4700}, weights)
    assert skewed.mismatch and skewed.p_value < 1e-6
    three = sample_ratio({"a": 340, "b": 330, "c": 330}, {"a": 34, "b": 33, "c": 33})
    assert not three.mismatch and three.chi2 == pytest.approx(0.0)
    assert sample_ratio({"only": 10}, {"only": 100}).p_value == 1.0


def test_sign_test_exact_values() -> None:
    assert sign_test(0, 5) == pytest.approx(2 / 32)
    assert sign_test(2, 8) == pytest.approx(2 * (1 + 10 + 45) / 1024)
    assert sign_test(8, 2) == sign_test(2, 8)
    assert sign_test(5, 5) == 1.0 and sign_test(0, 0) == 1.0
    assert sign_test(0, 20) == pytest.approx(2 / 2**20)


def test_interleaving_credit() -> None:
    teams = ["a", "b", "a", "b"]
    assert credit(teams, [1]) == "a"
    assert credit(teams, [2, 4]) == "b"
    assert credit(teams, [1, 2]) == "tie"
    assert credit(teams, []) == "tie"
    assert credit(teams, [2, 2, 3, 1]) == "a"  # a repeated click counts once
    assert credit(teams, [9]) == "tie"  # outside the page
    page, picked = team_draft(["x", "y", "z"], ["y", "x", "w"], 4, np.random.default_rng(1))
    assert sorted(page) == ["w", "x", "y", "z"] and len(picked) == 4
    assert picked.count("a") == picked.count("b")


# Synthetic event folders -----------------------------------------------------------------------------------


def _events(
    folder: Path,
    users: int,
    ctr: dict[str, float],
    seed: int,
    *,
    pref_b: float = 0.5,
    drop: dict[str, float] | None = None,
) -> None:
    """Impressions and clicks of ``users`` users assigned by the real Assigner under CONFIG.

    Each user has an activity (1-6 pages) and a personal click propensity around their variant's CTR, so
    the data has the within-user correlation real logs have. Interleaved pages credit b with ``pref_b`` of
    their clicks. ``drop`` loses that share of a variant's users (a broken logger: sample-ratio mismatch).
    """
    config = parse_config(CONFIG)
    assigner = Assigner(config)
    rng = np.random.default_rng(seed)
    imps: list[SearchImpression] = []
    acts: list[Interaction] = []
    for u in range(users):
        user = f"u{u:05d}"
        t = assigner.assign(user)
        variant = t.variant.split(",")[0]
        if drop and rng.random() < drop.get(variant, 0.0):
            continue
        base = ctr.get(variant, 0.2)
        p_user = float(np.clip(base * rng.gamma(4, 0.25), 0, 0.95))
        for k in range(int(rng.integers(1, 7))):
            rid = f"{user}-{k}"
            ts = DAY0 + timedelta(hours=int(rng.integers(0, 40)), seconds=u)
            blocks = [f"b{j}" for j in rng.permutation(20)[:5]]
            teams = ["a", "b", "b", "a", "a"] if t.interleave else None
            imps.append(
                SearchImpression(
                    request_id=rid,
                    ts=ts,
                    user_id=user,
                    session_id=f"s-{user}",
                    query="jeju island",
                    shown=[
                        ShownBlock(block_id=b, position=i + 1, propensity=1.0) for i, b in enumerate(blocks)
                    ],
                    n_candidates=5,
                    experiment=t.experiment,
                    variant=t.variant,
                    ranker_version="v1",
                    teams=teams,
                )
            )
            if rng.random() >= p_user:
                continue
            if teams is not None:  # the winning team's block at its first position
                pos = 2 if rng.random() < pref_b else 1
            else:
                pos = int(rng.choice([1, 2, 3, 4, 5], p=[0.45, 0.25, 0.15, 0.1, 0.05]))
            block = blocks[pos - 1]
            acts.append(
                Interaction(
                    request_id=rid,
                    ts=ts + timedelta(seconds=3),
                    user_id=user,
                    block_id=block,
                    doc_id=None,
                    position=pos,
                    type="click",
                )
            )
            acts.append(  # a second doc of the same block: still one clicked block
                Interaction(
                    request_id=rid,
                    ts=ts + timedelta(seconds=9),
                    user_id=user,
                    block_id=block,
                    doc_id="d1",
                    position=pos,
                    type="click",
                )
            )
    layout = DataLayout(folder)
    for day in sorted({i.ts.date() for i in imps}):
        write_records(
            [i for i in imps if i.ts.date() == day],
            layout.day_dir("impressions", day) / "part-0.parquet",
            SearchImpression,
        )
        day_acts = [a for a in acts if a.ts.date() == day]
        if day_acts:
            write_records(day_acts, layout.day_dir("interactions", day) / "part-0.parquet", Interaction)


def _variant(report: dict, experiment: str, name: str) -> dict:
    exp = next(e for e in report["experiments"] if e["experiment"] == experiment)
    return next(v for v in exp["variants"] if v["name"] == name)


def test_analysis_finds_the_better_variant(tmp_path: Path) -> None:
    _events(tmp_path, 3000, {"control": 0.20, "treatment": 0.28}, seed=1, pref_b=0.7)
    report = analyze(parse_config(CONFIG), tmp_path)
    ab = next(e for e in report["experiments"] if e["experiment"] == "ab")
    assert not ab["srm"]["mismatch"] and ab["mixed_users"] == 0
    control, treatment = _variant(report, "ab", "control"), _variant(report, "ab", "treatment")
    ctr = treatment["metrics"]["ctr"]
    assert ctr["value"] > control["metrics"]["ctr"]["value"]
    assert ctr["lift"] > 0 and ctr["lift_ci"][0] > 0 and ctr["p_value"] < 0.05
    assert treatment["metrics"]["mrr"]["p_value"] < 0.05
    # Holdback users (10%) and the interleaving experiment's users are not in the A/B rows.
    assert control["users"] + treatment["users"] < 0.7 * 3000
    inter = _variant(report, "inter", "a-vs-b")["interleaving"]
    assert inter["wins_b"] > inter["wins_a"] and inter["p_value"] < 0.05 and inter["ties"] > 0
    assert inter["preference_b"] == pytest.approx(0.7, abs=0.08)
    # Two click rows on one block of one page count as one clicked block.
    pages = load_pages(DataLayout(tmp_path))
    assert max(len(p.clicked) for p in pages.values()) == 1


def test_analysis_of_equal_variants_rarely_finds_a_lift(tmp_path: Path) -> None:
    _events(tmp_path, 2000, {"control": 0.2, "treatment": 0.2}, seed=3)
    pages = load_pages(DataLayout(tmp_path))
    experiment = parse_config(CONFIG).experiment("ab")
    assert analyze_one(experiment, pages)["variants"][1]["metrics"]["ctr"]["p_value"] > 0.05
    # Across re-randomizations of the same users (labels shuffled by user), the 5% test fires about 5% of
    # the time: the user-level variance is the right one.
    rng = np.random.default_rng(0)
    users = sorted({p.user_id for p in pages.values() if "ab" in p.experiments})
    significant = 0
    for _ in range(40):
        label = dict(zip(users, rng.choice(["control", "treatment"], len(users)), strict=True))
        shuffled = {
            rid: _Page(p.user_id, ["ab"], [label[p.user_id]], p.clicked)
            for rid, p in pages.items()
            if p.user_id in label
        }
        p = analyze_one(experiment, shuffled)["variants"][1]["metrics"]["ctr"]["p_value"]
        significant += p < 0.05
    assert significant <= 6


def test_analysis_flags_a_sample_ratio_mismatch(tmp_path: Path) -> None:
    _events(tmp_path, 3000, {"control": 0.2, "treatment": 0.2}, seed=5, drop={"treatment": 0.2})
    report = analyze(parse_config(CONFIG), tmp_path, "ab")
    assert [e["experiment"] for e in report["experiments"]] == ["ab"]
    assert report["experiments"][0]["srm"]["mismatch"]


def test_a_user_seen_in_two_variants_is_excluded(tmp_path: Path) -> None:
    pages = {
        "r1": _Page("u1", ["ab"], ["control"], {1}),
        "r2": _Page("u1", ["ab"], ["treatment"], set()),
        "r3": _Page("u2", ["other", "ab"], ["x", "treatment"], {2}),
        "r4": _Page("u3", ["holdback"], ["holdback"], {1}),
    }
    out = analyze_one(parse_config(CONFIG).experiment("ab"), pages)
    assert out["mixed_users"] == 1 and out["users"] == 1
    treatment = out["variants"][1]
    assert treatment["impressions"] == 1 and treatment["metrics"]["mrr"]["value"] == pytest.approx(0.5)


def test_cli_analyze_json_and_plot(tmp_path: Path) -> None:
    from search.cli import analysis, experiments

    events = tmp_path / "events-dir"
    _events(events, 600, {"control": 0.2, "treatment": 0.3}, seed=2, pref_b=0.7)
    config = tmp_path / "exp.yaml"
    config.write_text(CONFIG)
    root = typer.Typer()
    experiments.register(root)
    analysis.register(root)
    png = tmp_path / "plot.png"
    result = CliRunner().invoke(
        root,
        [
            "experiment",
            "analyze",
            "--config",
            str(config),
            "--events",
            str(events),
            "--plot",
            str(png),
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert {e["experiment"] for e in payload["experiments"]} == {"ab", "inter"}
    assert png.stat().st_size > 10_000
    table = CliRunner().invoke(
        root, ["experiment", "analyze", "--config", str(config), "--events", str(events)]
    )
    assert table.exit_code == 0, table.output
    assert "sample ratio" in table.output and "interleaving" in table.output
    # The typed report the human output reads gives back the JSON it was read from.
    from search.jobs.results import Analysis

    report = {k: v for k, v in payload.items() if k not in ("config", "plot")}
    assert Analysis.model_validate(report).to_json() == report


def test_the_lift_p_value_and_its_ci_agree() -> None:
    """p < 0.05 exactly when the lift's 95% CI excludes 0, also when the arms' variances differ a lot (a
    z-test of t - c with Var(t) + Var(c) gave p 0.037 with a CI spanning 0 for this case)."""
    from search.experiments.stats import Ratio, compare

    cases = [(0.30, 1e-4, 0.20, 2.2e-3), (0.21, 4e-5, 0.20, 3e-5), (0.5, 1e-3, 0.45, 1e-5)]
    for t, vt, c, vc in cases:
        result = compare(Ratio(t, vt, 100), Ratio(c, vc, 100))
        lo, hi = result.lift_ci
        assert (result.p_value < 0.05) == (lo > 0 or hi < 0), (t, vt, c, vc, result)
