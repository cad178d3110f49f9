"""``smartblock`` commands of the ranking stage: ``evaluate``, ``train ranker`` and ``models ...``.

Heavy modules (torch, LightGBM) load inside the commands, so ``smartblock --help`` stays fast.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from search.cli.common import console, print_json, state

if TYPE_CHECKING:
    from ranking.config import RankingSettings
    from ranking.registry import ModelRegistry

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
        ranking = ranking.model_copy(update={"train": ranking.train.model_copy(update={"seed": seed})})
    return ranking


def _registry(folder: Path | None) -> ModelRegistry:
    from ranking.registry import ModelRegistry

    settings = state.settings().ranking
    return ModelRegistry(
        folder or settings.registry_dir, tolerance=settings.tolerance, metric=settings.promotion_metric
    )


def evaluate(
    ltr_train: Annotated[Path, typer.Option("--ltr-train", help="SVMlight/LETOR training file.")],
    ltr_test: Annotated[Path, typer.Option("--ltr-test", help="SVMlight/LETOR test file (evaluation only).")],
    models: ModelsOpt = "linear,lgbm,dasalc-ens",
    ltr_valid: Annotated[
        Path | None,
        typer.Option("--ltr-valid", help="Validation file; default: lists carved from the training file."),
    ] = None,
    threads: ThreadsOpt = None,
    seed: SeedOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Train each model on the same split and report ndcg@1/5/10 and MRR on the test lists."""
    from ranking.models import parse_model_list
    from ranking.pipeline import compare_models, load_ltr_splits

    names = parse_model_list(models)
    settings = _settings(threads, seed)
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
    table = Table(title=f"{ltr_test.name}: {test.n_lists} lists")
    table.add_column("model")
    for metric in ("ndcg@1", "ndcg@5", "ndcg@10", "mrr"):
        table.add_column(metric, justify="right")
    for name, row in results.items():
        table.add_row(name, *(f"{row[m]:.4f}" for m in ("ndcg@1", "ndcg@5", "ndcg@10", "mrr")))
    console.print(table)


@train_app.command("ranker")
def train_ranker(
    model: Annotated[str, typer.Option("--model", help="linear|mlp|dcn|dasalc|dasalc-ens|lgbm")],
    ltr_train: Annotated[Path, typer.Option("--ltr-train", help="SVMlight/LETOR training file.")],
    ltr_valid: Annotated[
        Path | None, typer.Option("--ltr-valid", help="Validation file; default: carved from training.")
    ] = None,
    warm_start: Annotated[
        bool, typer.Option("--warm-start", help="Fine-tune the line's current model instead of a fresh one.")
    ] = False,
    line: LineOpt = "ranker",
    registry: RegistryOpt = None,
    threads: ThreadsOpt = None,
    seed: SeedOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Train a ranker and register it as a new (unpromoted) version."""
    from ranking.models import parse_model_list
    from ranking.pipeline import load_ltr_splits, train_and_register

    (name,) = parse_model_list(model)
    settings = _settings(threads, seed)
    train, valid, _ = load_ltr_splits(
        ltr_train, None, ltr_valid, settings.train.valid_fraction, settings.train.seed
    )
    reg = _registry(registry)
    version, ranker = train_and_register(
        name,
        train,
        valid,
        settings,
        reg,
        line=line,
        warm_start=warm_start,
        metadata={"data_range": {"train_file": str(ltr_train), "valid_file": str(ltr_valid or "carved")}},
    )
    result = {"line": line, "version": version, "model": name, "info": ranker.info_}
    if as_json:
        print_json(result)
        return
    console.print(f"registered {line}/{version} ({name}); promote it after `smartblock models validate`")


@models_app.command("list")
def list_models(
    line: Annotated[str | None, typer.Option("--line", help="Only this model line.")] = None,
    registry: RegistryOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Every version of every model line, with its metrics and which one is current."""
    reg = _registry(registry)
    result = {name: reg.describe(name) for name in ([line] if line else reg.lines())}
    if as_json:
        print_json(result)
        return
    for name, rows in result.items():
        table = Table(title=f"{name} ({reg.root / name})")
        for col in ("version", "model", "saved at", "validated", "current"):
            table.add_column(col)
        for row in rows:
            table.add_row(
                row["version"],
                row["model"],
                str(row["saved_at"]),
                str(row["validated"]),
                "*" if row["current"] else "",
            )
        console.print(table)


@models_app.command("validate")
def validate(
    line: Annotated[str, typer.Argument(help="Model line.")],
    version: Annotated[str, typer.Argument(help="Candidate version, e.g. v0002.")],
    ltr_holdout: Annotated[Path, typer.Option("--ltr-holdout", help="SVMlight/LETOR holdout file.")],
    registry: RegistryOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Compare a candidate with the current model on a holdout; promotion needs this to pass."""
    from dataclasses import asdict

    from ranking.base import read_manifest
    from ranking.ltr import load_svmlight

    reg = _registry(registry)
    width = len(read_manifest(reg.path(line, version))["schema"]["feature_names"])
    report = reg.validate(line, version, load_svmlight(ltr_holdout, n_features=width))
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
    """Make a validated version the current model."""
    _registry(registry).promote(line, version, force=force)
    console.print(f"{line}: current is now {version}")


@models_app.command("rollback")
def rollback(line: Annotated[str, typer.Argument(help="Model line.")], registry: RegistryOpt = None) -> None:
    """Make the previously promoted version current again."""
    version = _registry(registry).rollback(line)
    console.print(f"{line}: rolled back, current is now {version}")
