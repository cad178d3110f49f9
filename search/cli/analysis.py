"""``smartblock experiment analyze|estimate`` and ``smartblock events export``: measuring experiments.

``analyze`` reads an exported event log and reports each variant with user-level confidence intervals;
``estimate`` is the offline counterpart on logged data (IPS / SNIPS with the logged propensities); ``events
export`` archives the server's event stream as Parquet in the data layout ``analyze`` reads. Heavy modules
(scipy, matplotlib, Redis, the rankers) load inside the commands, so ``smartblock --help`` stays fast.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from search.cli.common import console, print_json, progress_bar, state
from search.cli.experiments import app as experiment_app

if TYPE_CHECKING:
    from search.experiments.estimators import Interval
    from search.jobs.results import Analysis

events_app = typer.Typer(help="The server's event stream: archive it as Parquet.", no_args_is_help=True)

JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object.")]


def register(root: typer.Typer) -> None:
    """Add ``analyze`` and ``estimate`` to the ``experiment`` group and the ``events`` group to the root."""
    experiment_app.command("analyze")(analyze)
    experiment_app.command("estimate")(estimate)
    events_app.command("export")(export)
    root.add_typer(events_app, name="events")


def analyze(
    config: Annotated[
        Path, typer.Option("--config", help="The experiment config (YAML) the events ran under.")
    ],
    events: Annotated[
        Path,
        typer.Option("--events", help="Data folder with events/ (what `smartblock events export` writes)."),
    ],
    experiment: Annotated[
        str | None, typer.Option("--experiment", help="Only this experiment (default: every one).")
    ] = None,
    plot: Annotated[Path | None, typer.Option("--plot", help="Also write a PNG of the metrics.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Per variant: users, impressions, CTR, clicks@3 and MRR with 95% user-level CIs, lift and p-value vs
    the control, a sample-ratio-mismatch check, and the team-draft preference of interleaving variants."""
    from search.experiments.analysis import analyze as run
    from search.jobs.results import Analysis
    from serving.experiments.config import load_config

    cfg, _ = load_config(config)
    report = run(cfg, events, experiment)
    if plot is not None:
        from search.experiments.plot import plot_analysis

        plot_analysis(report, plot)
    if as_json:
        print_json({"config": str(config), **report, **({"plot": str(plot)} if plot else {})})
        return
    _print_analysis(Analysis.model_validate(report))
    if plot is not None:
        console.print(f"plot: {plot}")


def _print_analysis(report: Analysis) -> None:
    from search.experiments.analysis import format_p, table_rows

    console.print(f"{report.events}: {report.impressions} impressions")
    for exp in report.experiments:
        srm = exp.srm
        table = Table(title=f"{exp.experiment} (control: {exp.control})")
        for col in ("variant", "users", "imps", "metric", "value ± 95% CI", "lift ± 95% CI", "p"):
            table.add_column(col, justify="left" if col in ("variant", "metric") else "right")
        for row in table_rows(exp.to_json()):
            table.add_row(*row)
        console.print(table)
        verdict = "[bold red]MISMATCH[/]" if srm.mismatch else "ok"
        observed = ", ".join(f"{k} {v}" for k, v in srm.observed.items())
        chi2 = "chi2 -" if srm.chi2 is None else f"chi2 {srm.chi2:.2f}"
        console.print(f"  sample ratio: {verdict} (users {observed}; {chi2}, p {format_p(srm.p_value)})")
        if exp.mixed_users or exp.unknown_variants:
            console.print(
                f"  excluded: {exp.mixed_users} users seen in two variants; impressions of variants not "
                f"in the config: {exp.unknown_variants or 0}"
            )
        for v in exp.variants:
            il = v.interleaving
            if il:
                share = "-" if il.preference_b is None else f"{il.preference_b:.3f}"
                console.print(
                    f"  interleaving {v.name}: {il.a} (a) {il.wins_a} wins, {il.b} (b) "
                    f"{il.wins_b} wins, {il.ties} ties; b preferred on {share} of decided pages, "
                    f"sign test p {format_p(il.p_value)} (users: a {il.users_a}, b {il.users_b}, "
                    f"p {format_p(il.user_p_value)})"
                )


def export(
    out: Annotated[Path, typer.Option("--out", help="Data folder to write events/ (and rejected/) under.")],
    follow: Annotated[
        bool,
        typer.Option("--follow", help="Keep archiving new events until Ctrl-C (default: drain and exit)."),
    ] = False,
    flush_seconds: Annotated[
        float,
        typer.Option("--flush-seconds", min=0.1, help="With --follow: write files at least this often."),
    ] = 10.0,
    flush_rows: Annotated[
        int, typer.Option("--flush-rows", min=1, help="Write files every this many events.")
    ] = 10_000,
    consumer: Annotated[
        str | None,
        typer.Option("--consumer", help="Consumer name in the 'archive' group (default: host-archive)."),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Archive the server's event stream as Parquet day partitions (consumer group 'archive').

    At least once: entries are acknowledged after their file is written; readers drop duplicates. Files are
    never rewritten: every flush adds part files. Redis comes from the settings (features.redis_url,
    REDIS_URL, else the embedded server) and the stream from features.namespace.
    """
    from features.archive import StreamArchiver
    from features.connection import connect
    from features.keys import Keys

    settings = state.settings().features
    archiver = StreamArchiver(
        connect(settings), Keys(settings.namespace).events_stream, out, consumer=consumer
    )

    def report(stats: Any) -> None:
        if not as_json:
            console.print(
                f"written: {stats.impressions} impressions, {stats.interactions} interactions "
                f"({stats.files} files, {stats.rejected} rejected)"
            )

    if follow and not as_json:
        console.print(f"archiving {archiver.stream} into {out} (Ctrl-C stops)")
    stats = archiver.run(follow=follow, flush_rows=flush_rows, flush_seconds=flush_seconds, on_flush=report)
    if as_json:
        print_json({"out": str(out), "stream": archiver.stream, "group": archiver.group, **stats.to_json()})
        return
    days = ", ".join(sorted(stats.days)) or "none"
    lost = ""
    if stats.trimmed or stats.uncounted:
        floor = "at least " if stats.uncounted else ""  # Redis 6.2 names a gap without counting it
        lost = f"; {floor}{stats.trimmed} trimmed by the stream's cap before they were archived"
    console.print(
        f"{out}: {stats.impressions} impressions, {stats.interactions} interactions, "
        f"{stats.rejected} rejected in {stats.files} new files (days {days}); "
        f"{stats.skipped_files} files were already there{lost}"
    )


def estimate(
    world: Annotated[
        Path, typer.Option("--world", help="Data folder with logged impressions and propensities.")
    ],
    model: Annotated[
        str,
        typer.Option(
            "--model",
            help="Registry line[@version] (default version: current, else newest), or logging|greedy.",
        ),
    ],
    days: Annotated[
        str | None, typer.Option("--days", help="YYYY-MM-DD..YYYY-MM-DD (default: the world's test days).")
    ] = None,
    registry: Annotated[
        Path | None,
        typer.Option("--registry", help="Registry folder (default: settings ranking.registry_dir)."),
    ] = None,
    seed: Annotated[int, typer.Option("--seed", min=0, help="Bootstrap seed.")] = 0,
    as_json: JsonOpt = False,
) -> None:
    """Offline estimate of a ranker's clicks per page on logged data: IPS and SNIPS (item-position model)
    with bootstrap CIs, beside the logging policy, its greedy page and the clicks observed.

    The ranker reorders the logging policy's greedy page of each request (features at the request's time);
    with a simulated world, the true expected clicks (from truth/) are reported as a check.
    """
    from search.experiments.counterfactual import estimate as run
    from search.experiments.counterfactual import parse_days

    settings = state.settings()
    with progress_bar(not as_json) as report:
        result = run(
            world,
            model,
            settings,
            days=parse_days(days) if days else None,
            registry=registry,
            seed=seed,
            progress=report,
        )
    if as_json:
        print_json(result.to_json())
        return
    console.print(
        f"{world}, days {result.days}: {result.requests} requests "
        f"({result.greedy_page.unknown} without a greedy page in the logs)"
        + (f"; model {result.version}" if result.version else "")
    )
    obs = result.observed
    table = Table(title="clicks per page (95% CI)")
    for col in ("policy", "IPS", "SNIPS", "clicks@3 (SNIPS)", "effective pages", "truth (greedy pages)"):
        table.add_column(col, justify="left" if col == "policy" else "right")
    for name, row in result.estimates.items():
        truth = row.truth_on_greedy_pages
        table.add_row(
            name,
            _ci(row.ips.clicks_per_page),
            _ci(row.snips.clicks_per_page),
            _ci(row.snips.clicks_at_3),
            "-" if row.effective_pages is None else f"{row.effective_pages:.0f}",
            _ci(truth) if truth else "-",
        )
    table.add_row("observed, all pages", _ci(obs.all_pages), "", "", str(obs.all_pages.pages), "")
    table.add_row("observed, greedy pages", _ci(obs.greedy_pages), "", "", str(obs.greedy_pages.pages), "")
    console.print(table)


def _ci(entry: Interval) -> str:
    lo, hi = entry.ci
    if entry.value is None or lo is None or hi is None:
        return "-"
    return f"{entry.value:.3f} [{lo:.3f}, {hi:.3f}]"
