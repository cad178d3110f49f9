"""``smartblock experiment``: check an experiment config file (analysis commands join this group too)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from data.errors import ConfigError
from search.cli.common import console, print_json, state

app = typer.Typer(help="A/B experiments: validate configs, analyze results.", no_args_is_help=True)

JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object.")]


def register(root: typer.Typer) -> None:
    app.command("validate")(validate)
    root.add_typer(app, name="experiment")


def validate(
    file: Annotated[Path, typer.Argument(help="Experiment config (YAML).")],
    registry: Annotated[
        Path | None,
        typer.Option("--registry", help="Model registry to resolve rankers in (default: settings)."),
    ] = None,
    skip_registry: Annotated[
        bool, typer.Option("--skip-registry", help="Check the file only, not that its rankers exist.")
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Refuse a bad config with what is wrong and where; print its layers, experiments and variants."""
    from ranking.registry import ModelRegistry
    from serving.experiments.config import check_rankers, load_config, registry_lines

    config, _ = load_config(file)
    if not skip_registry:
        ranking = state.settings().ranking
        folder = registry or ranking.registry_dir
        problems = check_rankers(config, registry_lines(ModelRegistry(folder)))
        if problems:
            raise ConfigError(
                f"experiment config {file}: rankers not servable from the registry {folder}:\n"
                + "\n".join(f"  {p}" for p in problems)
            )
    if as_json:
        print_json({"file": str(file), "valid": True, **config.model_dump(mode="json", exclude_none=True)})
        return
    table = Table(title=f"{file}: valid")
    for col in ("layer", "experiment", "traffic %", "variant", "weight %", "type", "overrides"):
        table.add_column(col)
    for layer in config.layers:
        for exp in layer.experiments:
            for v in exp.variants:
                over = v.settings.model_dump(exclude_none=True)
                if v.interleave:
                    over = {"interleave": f"{v.interleave.a} vs {v.interleave.b}", **over}
                table.add_row(
                    layer.name, exp.name, f"{exp.traffic:g}", v.name, f"{v.weight:g}", v.kind, str(over)
                )
    console.print(table)
    if config.holdback.percent:
        console.print(f"holdback: {config.holdback.percent:g}% of users (salt {config.holdback.salt})")
