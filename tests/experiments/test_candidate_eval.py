"""The served-path evaluation on the tiny world: real indexes, a real Redis scratch namespace, a model."""

from __future__ import annotations

from pathlib import Path

import pytest

from search.experiments.candidate_eval import CandidateEvalOptions, run_candidate_eval


@pytest.mark.slow
def test_every_system_is_judged_against_the_oracle(
    tiny_world: Path, base_settings, parts, trained_versions: list[str]
) -> None:
    options = CandidateEvalOptions(users=60, queries=80, bootstrap=100, depth=40, rerank=8, seed=3)
    result = run_candidate_eval(base_settings, tiny_world, ["ranker"], options)
    assert result["queries"] == 80 and result["sessions"] >= 20
    systems = result["overall"]["systems"]
    assert set(systems) == {
        "retrieval",
        "ranker",
        "ranker@8",
        "oracle@8",
        "nonpersonal-oracle",
        "longterm-oracle",
        "oracle",
    }
    best = systems["oracle"]["utility@8"]["mean"]
    for name, row in systems.items():
        assert row["utility@8"]["mean"] <= best + 1e-9, name
        assert 0.0 <= row["ndcg@8"]["mean"] <= 1.0 + 1e-9, name
        for metric in ("utility@8", "examined_utility", "ndcg@8", "gain_captured"):
            lo, hi = row[metric]["ci95"]
            assert lo - 1e-9 <= row[metric]["mean"] <= hi + 1e-9, (name, metric)
    assert systems["oracle"]["gain_captured"]["mean"] == 1.0
    assert systems["retrieval"]["gain_captured"]["mean"] == 0.0
    assert systems["oracle"]["ndcg@8"]["mean"] == pytest.approx(1.0)
    # Segments partition the queries.
    assert sum(t["queries"] for t in result["by_kind"].values()) == 80
    assert sum(t["queries"] for t in result["by_entropy"].values()) == 80
    assert sum(t["queries"] for t in result["by_step"].values()) == 80
    # Every session has a first query; the sessions' later queries make up the rest.
    assert result["by_step"]["first"]["queries"] == result["sessions"]
    # The scratch namespace the sessions wrote to is gone; the served one was never touched.
    from features.connection import connect

    client = connect(base_settings.features)
    assert not list(client.scan_iter(match=f"{base_settings.features.namespace}-eval*", count=1000))
