"""``smartblock`` commands of the ranking stage: ``evaluate``, ``train ranker`` and ``models ...``.

Heavy modules (torch, LightGBM) load inside the commands, so ``smartblock --help`` stays fast.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from search.cli.common import ClusterOption, console, on_cluster, print_json, progress_bar, state

if TYPE_CHECKING:
    from ranking.config import RankingSettings
    from ranking.registry import ModelRegistry
    from ranking.world import WorldSource

train_app = typer.Typer(help="Train models.", no_args_is_help=True)
models_app = typer.Typer(
    help="The model registry: list versions, validate a candidate, promote, roll back.", no_args_is_help=True
)

ModelsOpt = Annotated[
    str, typer.Option("--models", help="Comma-separated: linear,mlp,dcn,dasalc,dasalc-ens,lgbm.")
]
ThreadsOpt = Annotated[
    int | None, typer.Option("--threads", min=1, help="torch / LightGBM threads (default: settings).")
]
SeedOpt = Annotated[int | None, typer.Option("--seed", min=0, help="Training seed (default: settings).")]
RegistryOpt = Annotated[
    Path | None, typer.Option("--registry", help="Registry folder (default: settings ranking.registry_dir).")
]
LineOpt = Annotated[str, typer.Option("--line", help="Model line inside the registry.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object.")]


def register(app: typer.Typer) -> None:
    """Add this stage's commands and command groups to the root app."""
    app.command("evaluate")(evaluate)
    app.add_typer(train_app, name="train")
    app.add_typer(models_app, name="models")


def _settings(threads: int | None = None, seed: int | None = None) -> RankingSettings:
    ranking = state.settings().ranking
    if threads is not None:
        ranking = ranking.model_copy(update={"threads": threads})
    if seed is not None:
        # Both schedules: world training runs on ``world.train`` (``RankingSettings.for_world``), and a seed
        # set on ``train`` alone was silently ignored there.
        world_train = ranking.world.train.model_copy(update={"seed": seed})
        world = ranking.world.model_copy(update={"train": world_train})
        ranking = ranking.model_copy(
            update={"train": ranking.train.model_copy(update={"seed": seed}), "world": world}
        )
    return ranking


def _world_source(
    world: Path, settings: RankingSettings, progress: Any, cluster: str | None = None
) -> WorldSource:
    """The world's training lists under the process settings (features, M3, retrieval and engine sections);
    ``cluster`` (``--cluster``) builds the training set on that running cluster."""
    from search.jobs.training import world_source

    return world_source(on_cluster(state.settings(), cluster), world, settings, progress)


def _registry(folder: Path | None) -> ModelRegistry:
    from ranking.registry import ModelRegistry

    settings = state.settings().ranking
    return ModelRegistry(
        folder or settings.registry_dir,
        tolerance=settings.tolerance,
        metric=settings.promotion_metric,
        trial_timeout_s=settings.trial_timeout_s,
    )


def evaluate(
    world: Annotated[
        Path | None, typer.Option("--world", help="World folder: train on its early days, test on the last.")
    ] = None,
    ltr_train: Annotated[
        Path | None, typer.Option("--ltr-train", help="SVMlight/LETOR training file.")
    ] = None,
    ltr_test: Annotated[
        Path | None, typer.Option("--ltr-test", help="SVMlight/LETOR test file (evaluation only).")
    ] = None,
    models: Annotated[
        str | None,
        typer.Option(
            "--models",
            help="Comma-separated: linear,mlp,dcn,dasalc,dasalc-ens,lgbm; with --world also logging, oracle "
            "and <model>-np (no user features). Default: linear,lgbm,dasalc-ens (LTR) or "
            "logging,lgbm,dcn,dcn-np,dasalc,dasalc-np,oracle (world).",
        ),
    ] = None,
    ltr_valid: Annotated[
        Path | None,
        typer.Option("--ltr-valid", help="Validation file; default: lists carved from the training file."),
    ] = None,
    plot: Annotated[
        Path | None, typer.Option("--plot", help="With --world: write a PNG of ndcg@10 by entropy bucket.")
    ] = None,
    threads: ThreadsOpt = None,
    seed: SeedOpt = None,
    as_json: JsonOpt = False,
    candidates: Annotated[
        bool,
        typer.Option(
            "--candidates",
            help="With --world: judge registry models (--models: lines or line@version) on every "
            "candidate /search orders, in-process, against the world's true utility, beside retrieval "
            "order and the oracles.",
        ),
    ] = False,
    users: Annotated[int, typer.Option("--users", min=1, help="With --candidates: user panel.")] = 1000,
    queries: Annotated[
        int, typer.Option("--queries", min=1, help="With --candidates: queries played.")
    ] = 1500,
) -> None:
    """Train each model on the same split and report ndcg@1/5/10 and MRR on held-out lists.

    With --world --candidates: utility@8, examined utility, NDCG@8 against utility and gain captured of the
    served path (search.experiments.candidate_eval), overall, by query click entropy and by query kind.

    With --world: NDCG against the truth grades and click MRR on the world's test days, overall, by query
    click-entropy bucket and by user-diversity bucket. With --ltr-train/--ltr-test: on those files.
    """
    from data.errors import ConfigError

    if (world is None) == (ltr_train is None or ltr_test is None):
        raise ConfigError("give either --world DIR, or both --ltr-train FILE and --ltr-test FILE")
    if plot is not None and world is None:
        raise ConfigError("--plot needs --world")
    if candidates:
        if world is None:
            raise ConfigError("--candidates needs --world")
        _evaluate_candidates(world, models or "ranker", users, queries, seed or 0, as_json)
        return
    settings = _settings(threads, seed)
    if world is not None:
        _evaluate_world(world, models or WORLD_MODELS, settings, plot, as_json)
        return
    assert ltr_train is not None and ltr_test is not None  # checked above; narrows the types
    from ranking.models import parse_model_list
    from ranking.pipeline import compare_models, load_ltr_splits

    names = parse_model_list(models or "linear,lgbm,dasalc-ens")
    train, valid, test = load_ltr_splits(
        ltr_train, ltr_test, ltr_valid, settings.train.valid_fraction, settings.train.seed
    )

    def report(name: str, row: dict[str, Any]) -> None:
        if not as_json:
            console.print(f"{name}: ndcg@5 {row['ndcg@5']:.4f}, trained in {row['train_seconds']} s")

    results = compare_models(names, train, valid, test, settings, on_model=report)
    if as_json:
        print_json(results)
        return
    _print_table(f"{ltr_test.name}: {test.n_lists} lists", results)


WORLD_MODELS = "logging,lgbm,dcn,dcn-np,dasalc,dasalc-np,oracle"


def _evaluate_world(
    world: Path, models: str, settings: RankingSettings, plot: Path | None, as_json: bool
) -> None:
    from ranking.world_eval import evaluate_world, parse_world_models, plot_by_entropy

    names = parse_world_models(models)
    with progress_bar(not as_json) as report:
        source = _world_source(world, settings, report)
        source.table()
    if not as_json:
        cached = "cached" if source.from_cache else "built"
        console.print(f"training set {cached}: {source.table().num_rows} rows; days {source.split.to_json()}")

    def on_model(name: str, row: dict[str, Any]) -> None:
        if not as_json:
            seconds = f", trained in {row['train_seconds']} s" if "train_seconds" in row else ""
            console.print(f"{name}: ndcg@10 {row['ndcg@10']:.4f}{seconds}")

    results = evaluate_world(source, names, settings, on_model=on_model)
    if plot is not None:
        plot_by_entropy(results, plot)
    if as_json:
        print_json(results)
        return
    _print_table(f"{world}: test days {source.split.to_json()['test']}", results)
    for key in ("by_entropy", "by_diversity"):
        first = next(iter(results.values()))
        for bucket in first.get(key, {}):
            rows = {name: r[key][bucket] for name, r in results.items()}
            _print_table(f"{key.removeprefix('by_')} = {bucket} ({first[key][bucket]['lists']} lists)", rows)


def _evaluate_candidates(
    world: Path, models: str, users: int, queries: int, seed: int, as_json: bool
) -> None:
    from search.experiments.candidate_eval import CandidateEvalOptions, run_candidate_eval

    specs = [m.strip() for m in models.split(",") if m.strip() and m.strip() != "retrieval"]
    options = CandidateEvalOptions(users=users, queries=queries, seed=seed)
    with progress_bar(not as_json) as report:
        result = run_candidate_eval(state.settings(), world, specs, options, report)
    if as_json:
        print_json(result)
        return
    console.print(
        f"{result['queries']} queries in {result['sessions']} sessions; depth {result['depth']}; "
        f"oracle's top {result['page']} blocks below rank {result['rerank']}: "
        f"{result['oracle_top_below_rerank']} per query"
    )
    _print_utility_table("overall", result["overall"], result["page"])
    for key in ("by_entropy", "by_kind", "by_step"):
        for segment, table in result[key].items():
            _print_utility_table(f"{key.removeprefix('by_')} = {segment}", table, result["page"])


def _print_utility_table(title: str, table: dict[str, Any], page: int) -> None:
    out = Table(title=f"{title} ({table.get('queries', 0)} queries)")
    out.add_column("system")
    metrics = (f"utility@{page}", "examined_utility", f"ndcg@{page}", "gain_captured")
    for metric in metrics:
        out.add_column(metric, justify="right")
    for name, row in table.get("systems", {}).items():
        cells = [f"{row[m]['mean']:.3f} ±{(row[m]['ci95'][1] - row[m]['ci95'][0]) / 2:.3f}" for m in metrics]
        out.add_row(name, *cells)
    console.print(out)


def _print_table(title: str, results: dict[str, dict[str, Any]]) -> None:
    table = Table(title=title)
    table.add_column("model")
    # pa_ndcg@10, what the promotion gate reads, where the rows have it (truth-graded rows do not).
    extra = ("pa_ndcg@10",) if any("pa_ndcg@10" in row for row in results.values()) else ()
    metrics = ("ndcg@1", "ndcg@5", "ndcg@10", "mrr", *extra)
    for metric in metrics:
        table.add_column(metric, justify="right")
    for name, row in results.items():
        table.add_row(name, *("-" if row.get(m) is None else f"{row[m]:.4f}" for m in metrics))
    console.print(table)


@train_app.command("ranker")
def train_ranker(
    model: Annotated[str, typer.Option("--model", help="linear|mlp|dcn|dasalc|dasalc-ens|lgbm")],
    world: Annotated[
        Path | None, typer.Option("--world", help="World folder: its training days, early stopping on valid.")
    ] = None,
    ltr_train: Annotated[
        Path | None, typer.Option("--ltr-train", help="SVMlight/LETOR training file.")
    ] = None,
    ltr_valid: Annotated[
        Path | None, typer.Option("--ltr-valid", help="Validation file; default: carved from training.")
    ] = None,
    first_day: Annotated[
        str | None,
        typer.Option(
            "--from",
            help="With --world: first training day (default: the split's, or after the "
            "parent's last day with --warm-start).",
        ),
    ] = None,
    last_day: Annotated[
        str | None, typer.Option("--to", help="With --world: last training day (default: the split's).")
    ] = None,
    non_personalized: Annotated[
        bool, typer.Option("--non-personalized", help="With --world: drop user-dependent features.")
    ] = False,
    warm_start: Annotated[
        bool, typer.Option("--warm-start", help="Fine-tune the line's current model instead of a fresh one.")
    ] = False,
    line: LineOpt = "ranker",
    registry: RegistryOpt = None,
    threads: ThreadsOpt = None,
    seed: SeedOpt = None,
    engine: Annotated[
        bool,
        typer.Option(
            "--engine",
            help="Train on the engine, a local Dask cluster of engine.workers processes (torch: one "
            "torch.distributed rank each; dasalc-ens: a member per task); default: in this process "
            "(docs/scale.md compares the two).",
        ),
    ] = False,
    cluster: ClusterOption = None,
    as_json: JsonOpt = False,
) -> None:
    """Train a ranker and register it as a new (unpromoted) version."""
    from data.errors import ConfigError
    from ranking.models import parse_model_list
    from ranking.pipeline import load_ltr_splits, train_and_register, train_world_ranker

    if (world is None) == (ltr_train is None):
        raise ConfigError("give either --world DIR or --ltr-train FILE")
    (name,) = parse_model_list(model)
    settings = _settings(threads, seed)
    reg = _registry(registry)
    # With --cluster, a world's training set is built there too.
    on_engine = on_cluster(state.settings(), cluster).engine if engine or cluster else None
    if world is not None:
        with progress_bar(not as_json) as report:
            source = _world_source(world, settings, report, cluster)
            source.table()
        version, ranker = train_world_ranker(
            name,
            source,
            settings,
            reg,
            personalized=not non_personalized,
            days=(_day(first_day, "--from"), _day(last_day, "--to")),
            line=line,
            warm_start=warm_start,
            engine=on_engine,
        )
    else:
        assert ltr_train is not None  # checked above; narrows the type
        train, valid, _ = load_ltr_splits(
            ltr_train, None, ltr_valid, settings.train.valid_fraction, settings.train.seed
        )
        version, ranker = train_and_register(
            name,
            train,
            valid,
            settings,
            reg,
            line=line,
            warm_start=warm_start,
            metadata={"data_range": {"train_file": str(ltr_train), "valid_file": str(ltr_valid or "carved")}},
            engine=on_engine,
        )
    result = {"line": line, "version": version, "model": name, "info": ranker.info_}
    if as_json:
        print_json(result)
        return
    console.print(f"registered {line}/{version} ({name}); promote it after `smartblock models validate`")


def _day(value: str | None, option: str) -> date | None:
    from data.errors import ConfigError

    if value is None:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise ConfigError(f"{option} must be YYYY-MM-DD, got {value!r}") from None


@models_app.command("list")
def list_models(
    line: Annotated[str | None, typer.Option("--line", help="Only this model line.")] = None,
    registry: RegistryOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Every version of every model line, with its metrics, which one is current and which are broken."""
    reg = _registry(registry)
    result = {name: reg.describe(name) for name in ([line] if line else reg.lines())}
    if as_json:
        print_json(result)
        return
    for name, rows in result.items():
        table = Table(title=f"{name} ({reg.root / name})")
        for col in ("version", "model", "saved at", "validated", "current", "broken"):
            table.add_column(col)
        for row in rows:
            table.add_row(
                row["version"],
                str(row["model"]),
                str(row["saved_at"]),
                str(row["validated"]),
                "*" if row["current"] else "",
                row["broken"] or "",
            )
        console.print(table)


@models_app.command("validate")
def validate(
    line: Annotated[str, typer.Argument(help="Model line.")],
    version: Annotated[str, typer.Argument(help="Candidate version, e.g. v0002.")],
    ltr_holdout: Annotated[
        Path | None, typer.Option("--ltr-holdout", help="SVMlight/LETOR holdout file.")
    ] = None,
    world: Annotated[
        Path | None,
        typer.Option("--world", help="World folder: its held-out test days (click labels) are the holdout."),
    ] = None,
    registry: RegistryOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Compare a candidate with the current model on a holdout; promotion needs this to pass.

    Both models are trial-loaded in a child process first: a broken one exits 2 with the reason.
    """
    from dataclasses import asdict
    from functools import partial

    from data.errors import ConfigError
    from ranking.base import read_manifest

    if (world is None) == (ltr_holdout is None):
        raise ConfigError("give either --world DIR or --ltr-holdout FILE")
    reg = _registry(registry)
    manifest = read_manifest(reg.path(line, version))
    if world is not None:
        from ranking.pipeline import world_holdout

        settings = _settings()
        with progress_bar(not as_json) as bar:
            source = _world_source(world, settings, bar)
            source.table()
        holdout: Any = partial(world_holdout, source)
    else:
        from ranking.ltr import load_svmlight

        assert ltr_holdout is not None  # checked above; narrows the type
        width = len(manifest["metadata"]["schema"]["feature_names"])
        holdout = load_svmlight(ltr_holdout, n_features=width)
    report = reg.validate(line, version, holdout)
    if as_json:
        print_json(asdict(report))
    else:
        verdict = "passed" if report.passed else "FAILED"
        console.print(
            f"{line}/{version} {report.metric} {report.candidate_value:.4f} vs current "
            f"{report.baseline} {report.baseline_value}: {verdict} (tolerance {report.tolerance})"
        )
    if not report.passed:
        raise typer.Exit(1)


@models_app.command("promote")
def promote(
    line: Annotated[str, typer.Argument(help="Model line.")],
    version: Annotated[str, typer.Argument(help="Version to make current.")],
    force: Annotated[bool, typer.Option("--force", help="Promote without a passing validation.")] = False,
    registry: RegistryOpt = None,
) -> None:
    """Make a validated version the current model (trial-loaded in a child first, even with --force)."""
    _registry(registry).promote(line, version, force=force)
    console.print(f"{line}: current is now {version}")


@models_app.command("rollback")
def rollback(line: Annotated[str, typer.Argument(help="Model line.")], registry: RegistryOpt = None) -> None:
    """Make the previously promoted version current again."""
    version = _registry(registry).rollback(line)
    console.print(f"{line}: rolled back, current is now {version}")
