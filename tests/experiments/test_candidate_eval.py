"""The served-path evaluation on the tiny world: real indexes, a real Redis scratch namespace, a model."""

from __future__ import annotations

import itertools
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


def test_a_rerun_scores_the_same_rows_and_gets_the_same_result(
    tiny_world: Path, base_settings, parts, trained_versions: list[str]
) -> None:
    # A ranker's figures must be comparable run to run: the requests' random features (the Thompson draw)
    # are seeded by request ids the evaluation names, and every later page, click and feature follows them.
    options = CandidateEvalOptions(users=20, queries=30, bootstrap=20, depth=30, rerank=8, seed=5)
    first = run_candidate_eval(base_settings, tiny_world, ["ranker"], options)
    again = run_candidate_eval(base_settings, tiny_world, ["ranker"], options)
    assert first["queries"] == 30
    assert first == again


def test_requests_happen_on_the_world_timeline_in_play_order() -> None:
    # Decays (recent interest over hours, a session's tallies over minutes) must see the spacing training
    # saw: on the day after the logs, sessions in the active hours, never earlier than one played before.
    from datetime import UTC, date, datetime, timedelta

    from data.world.sessions import ACTIVE_HOURS_S
    from search.experiments.candidate_eval import _query_times

    options = CandidateEvalOptions(queries=300)
    day = date(2026, 1, 21)
    sessions: list[list[datetime]] = []
    for number in range(120):  # 4-query sessions can outlast the spacing of 2.5-query ones
        sessions.append(_query_times(day, number, 4, options, after=sessions[-1][-1] if sessions else None))
    flat = [t for times in sessions for t in times]
    assert flat == sorted(flat)  # the store never holds an event from a request's future
    midnight = datetime(2026, 1, 21, tzinfo=UTC)
    assert flat[0] >= midnight + timedelta(seconds=ACTIVE_HOURS_S[0])
    assert flat[-1] < midnight + timedelta(days=1)
    gaps = [(b - a).total_seconds() for times in sessions for a, b in itertools.pairwise(times)]
    assert min(gaps) >= 15 and max(gaps) <= 600
    assert _query_times(None, 0, 4, options) == []  # no day: the wall clock
