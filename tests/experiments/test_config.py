"""The experiment config's checks, hash assignment and team-draft interleaving."""

from __future__ import annotations

import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from data.errors import ConfigError
from serving.experiments.assignment import HOLDBACK, Assigner, bucket
from serving.experiments.config import (
    ExperimentConfig,
    check_rankers,
    load_config,
    parse_config,
    registry_lines,
)
from serving.experiments.interleaving import credit, team_draft

EXAMPLE = Path(__file__).resolve().parents[2] / "experiments" / "example.yaml"
TWO_LAYERS = """
holdback: {percent: 10, salt: hb}
layers:
  - name: ranking
    salt: rank-1
    experiments:
      - name: ab
        traffic: 60
        variants:
          - {name: control, weight: 50, settings: {ranker: retrieval-order}}
          - {name: lgbm, weight: 50, settings: {ranker: ranker}}
      - name: il
        traffic: 40
        variants: [{name: x, weight: 100, interleave: {a: ranker, b: dasalc}}]
  - name: retrieval
    salt: retr-1
    experiments:
      - name: fusion
        traffic: 100
        variants:
          - {name: plain, weight: 30}
          - {name: dense-heavy, weight: 70, settings: {fusion_weights: {dense: 3.0}}}
"""


def _problems(text: str) -> str:
    with pytest.raises(ConfigError) as err:
        parse_config(text, "bad.yaml")
    return str(err.value)


def test_the_example_config_is_valid() -> None:
    config, _ = load_config(EXAMPLE)
    assert {e.name for e in config.experiments()} >= {"ranker-ab", "ranker-interleave"}
    assert config.experiment("ranker-ab").control_variant.settings.ranker == "retrieval-order"
    assert config.rankers() == {"retrieval-order", "ranker", "dasalc"}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "layers: [{name: l, salt: s, experiments: [{name: e, traffic: 50, variants: "
            "[{name: a, weight: 60}, {name: b, weight: 30}]}]}]",
            "layers[0] (l).experiments[0] (e): Value",  # replaced below: the sum message
        ),
        (
            "layers: [{name: l, salt: s, experiments: [{name: e, traffic: 50, variants: "
            "[{name: a, weight: 50}, {name: a, weight: 50}]}]}]",
            "variant names of experiment 'e' must be unique, repeated: ['a']",
        ),
        (
            "layers: [{name: l, salt: s, experiments: "
            "[{name: e, traffic: 70, variants: [{name: a, weight: 100}]},"
            " {name: f, traffic: 40, variants: [{name: a, weight: 100}]}]}]",
            "take 110% of its users, over 100",
        ),
        (
            "layers: [{name: l, salt: s, experiments: [{name: e, traffic: 10, variants: "
            "[{name: a, weight: 100, settings: {ranker: x}}]}]},"
            " {name: m, salt: t, experiments: [{name: f, traffic: 10, variants: "
            "[{name: a, weight: 100, settings: {ranker: y}}]}]}]",
            "layers 'l' and 'm' both override 'ranker'",
        ),
        (
            "layers: [{name: l, salt: s, experiments: [{name: e, traffic: 10, variants: "
            "[{name: a, weight: 100, settings: {rankr: x}}]}]}]",
            "variants[0] (a).settings.rankr: Extra inputs are not permitted",
        ),
        (
            "layers: [{name: l, salt: s, experiments: [{name: e, traffic: 10, variants: "
            "[{name: a, weight: 100, settings: {feature_groups: {nope: false}}}]}]}]",
            "unknown feature groups ['nope']",
        ),
        (
            "layers: [{name: l, salt: s, experiments: [{name: e, traffic: 10, variants: "
            "[{name: a, weight: 100, interleave: {a: lgbm, b: lgbm}}]}]}]",
            "interleaving needs two different rankers",
        ),
        (
            "layers: [{name: l, salt: s, experiments: [{name: e, traffic: 10, variants: "
            "[{name: a, weight: 100, interleave: {a: x, b: y}}]}]},"
            " {name: m, salt: t, experiments: [{name: f, traffic: 10, variants: "
            "[{name: a, weight: 100, settings: {exploration: 0.1}}]}]}]",
            "layers 'l' and 'm' both override 'exploration'",
        ),
        (
            "layers: [{name: l, salt: s, experiments: [{name: default, traffic: 10, variants: "
            "[{name: control, weight: 100}]}]}]",
            "experiment 'default' would mix with users outside every experiment",
        ),
        ("layers: [unclosed", "not valid YAML"),
        ("- just a list", "expected a mapping"),
    ],
)
def test_a_bad_config_is_refused_with_what_and_where(text: str, expected: str) -> None:
    message = _problems(text)
    assert "bad.yaml" in message
    if expected.endswith("Value"):
        assert "sum to 90, not 100" in message and "layers[0] (l).experiments[0] (e)" in message
    else:
        assert expected in message


def test_yaml_booleans_as_names_are_caught() -> None:
    # `off` is YAML for false: a classic way to lose a variant name.
    message = _problems(
        "layers: [{name: l, salt: s, experiments: "
        "[{name: e, traffic: 10, variants: [{name: off, weight: 100}]}]}]"
    )
    assert "variants[0].name" in message


def test_rankers_must_exist_in_the_registry() -> None:
    config = parse_config(TWO_LAYERS)
    lines = {"ranker": (["v1", "v2"], "v1"), "dasalc": (["v1"], None)}
    problems = check_rankers(config, lines)
    assert problems == ["model line 'dasalc' has no promoted version (smartblock models promote)"]
    pinned = parse_config(TWO_LAYERS.replace("ranker: ranker}", "ranker: ranker@v9}"))
    assert any("no version 'v9'" in p for p in check_rankers(pinned, lines))
    assert any("unknown model 'ranker'" in p for p in check_rankers(config, {}))


def test_registry_lines_reads_a_real_registry(tmp_path: Path) -> None:
    from ranking.registry import ModelRegistry

    assert registry_lines(ModelRegistry(tmp_path / "models")) == {}


def test_assignment_is_deterministic_weighted_and_layers_are_independent() -> None:
    assigner = Assigner(parse_config(TWO_LAYERS))
    users = [f"user-{i}" for i in range(20_000)]
    treatments = [assigner.assign(u) for u in users]
    assert treatments[:50] == [assigner.assign(u) for u in users[:50]]  # a user stays put

    held = sum(t.holdback for t in treatments)
    assert abs(held / len(users) - 0.10) < 0.01
    active = [t for t in treatments if not t.holdback]
    assert all(t.experiment != HOLDBACK and len(t.assignments) == 2 for t in active)
    ranking = Counter(t.assignments[0] for t in active)
    n = len(active)
    assert abs(ranking[("ab", "control")] / n - 0.30) < 0.015
    assert abs(ranking[("ab", "lgbm")] / n - 0.30) < 0.015
    assert abs(ranking[("il", "x")] / n - 0.40) < 0.015
    # Independence: the fusion split is the same inside each ranking variant.
    for pair in ranking:
        inside = [t for t in active if t.assignments[0] == pair]
        share = sum(t.assignments[1] == ("fusion", "dense-heavy") for t in inside) / len(inside)
        assert abs(share - 0.70) < 0.03, (pair, share)
    # Settings of both layers are merged; the interleaving variant carries its rankers.
    t = next(t for t in active if t.assignments == (("ab", "lgbm"), ("fusion", "dense-heavy")))
    assert t.settings.ranker == "ranker" and t.settings.fusion_weights == {"dense": 3.0}
    assert t.experiment == "ab,fusion" and t.variant == "lgbm,dense-heavy"
    il = next(t for t in active if t.assignments[0] == ("il", "x"))
    assert il.interleave is not None and (il.interleave.a, il.interleave.b) == ("ranker", "dasalc")


def test_resizing_one_experiment_keeps_the_variants_of_users_who_stay() -> None:
    before = Assigner(parse_config(TWO_LAYERS))
    after = Assigner(parse_config(TWO_LAYERS.replace("traffic: 60", "traffic: 50")))
    moved = 0
    for i in range(5_000):
        a, b = before.assign(f"u{i}"), after.assign(f"u{i}")
        if a.assignments and b.assignments and a.assignments[0][0] == b.assignments[0][0] == "ab":
            moved += a.assignments[0] != b.assignments[0]
    assert moved == 0


def test_no_config_means_default_control() -> None:
    t = Assigner(ExperimentConfig()).assign("anyone")
    assert (t.experiment, t.variant, t.settings.ranker) == ("default", "control", None)
    assert 0 <= bucket("salt", "anyone") < 10_000


def test_team_draft_is_fair_and_complete() -> None:
    rng = np.random.default_rng(0)
    a = [f"b{i}" for i in range(30)]
    first_a = 0
    for _ in range(300):
        b = list(rng.permutation(a))
        page, teams = team_draft(a, b, 10, rng)
        assert len(page) == 10 == len(set(page))
        counts = Counter()
        for i, team in enumerate(teams):
            counts[team] += 1
            assert abs(counts["a"] - counts["b"]) <= 1 or i == 0
        # Each team's blocks appear in the order of its own ranking.
        for team, ranking in (("a", a), ("b", b)):
            mine = [p for p, t in zip(page, teams, strict=True) if t == team]
            assert mine == sorted(mine, key=ranking.index)
        first_a += teams[0] == "a"
    assert 110 < first_a < 190  # the first pick is a fair coin


def test_team_draft_fills_from_the_other_ranker_when_one_runs_out() -> None:
    page, teams = team_draft(["x"], ["y", "z", "w"], 4, np.random.default_rng(1))
    assert sorted(page) == ["w", "x", "y", "z"] and teams.count("a") == 1


def test_credit_counts_clicked_blocks_per_team() -> None:
    teams = ["a", "b", "a", "b"]
    assert credit(teams, [1, 3]) == "a"
    assert credit(teams, [2]) == "b"
    assert credit(teams, [1, 2]) == "tie"
    assert credit(teams, []) == "tie"
    assert credit(teams, [2, 2, 2, 1, 3]) == "a"  # repeated clicks on one block count once


def test_validate_cli_refuses_a_bad_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "layers: [{name: l, salt: s, experiments: "
        "[{name: e, traffic: 10, variants: [{name: a, weight: 99}]}]}]"
    )
    run = subprocess.run(
        [sys.executable, "-m", "search.cli", "experiment", "validate", str(bad), "--skip-registry"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 2
    assert "sum to 99, not 100" in run.stderr and "Traceback" not in run.stderr
    ok = subprocess.run(
        [
            sys.executable,
            "-m",
            "search.cli",
            "experiment",
            "validate",
            str(EXAMPLE),
            "--skip-registry",
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert ok.returncode == 0 and '"valid": true' in ok.stdout


def test_a_file_that_is_not_utf8_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes("layers: [] # caf\xe9\n".encode("latin-1"))
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_config(path)
