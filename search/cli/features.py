"""``smartblock features``: build the online features, make point-in-time training sets, run the stream."""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from search.cli.common import console, print_json, progress_bar, state

if TYPE_CHECKING:
    from features.store import RedisFeatureStore

app = typer.Typer(
    help="The Redis feature store: batch build, training sets, live stream.", no_args_is_help=True
)


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="features")


def _store() -> RedisFeatureStore:
    from features.store import RedisFeatureStore

    return RedisFeatureStore.connect(state.settings().features)


@app.command()
def build(
    world: Annotated[Path, typer.Option("--world", help="Data folder (a world or your own logs).")],
    as_json: Annotated[bool, typer.Option("--json", help="Print build stats as JSON.")] = False,
) -> None:
    """Replay all logs into the online store and write the latest batch snapshot (rebuilds from scratch)."""
    from data.layout import DataLayout
    from features.build import build_online_features

    store = _store()
    with progress_bar(not as_json) as report:
        stats = build_online_features(DataLayout(world), store, progress=report)
    if as_json:
        print_json(stats)
    else:
        console.print(stats)


@app.command()
def rebuild(
    world: Annotated[Path, typer.Option("--world", help="Data folder (catalogue and logs).")],
    events: Annotated[
        list[Path], typer.Option("--events", help="Folder written by `events export` (repeatable).")
    ],
    as_json: Annotated[bool, typer.Option("--json", help="Print build stats as JSON.")] = False,
) -> None:
    """Restore the online state from the logs plus the archived live events (`events export`).

    Clears the namespace (the event stream too) and replays everything in event time, as `build` does: drain
    the stream into the archive first (`events export --out DIR`), and stop the server's writes meanwhile.
    """
    from data.errors import ConfigError
    from data.layout import DataLayout
    from features.build import build_online_features

    missing = [str(e) for e in events if not (e / "events").is_dir()]
    if missing:
        raise ConfigError(f"not an `events export` folder (no events/ inside): {', '.join(missing)}")
    store = _store()
    with progress_bar(not as_json) as report:
        stats = build_online_features(DataLayout(world), store, archives=events, progress=report)
    if as_json:
        print_json(stats)
    else:
        console.print(stats)


@app.command()
def dataset(
    world: Annotated[Path, typer.Option("--world", help="Data folder.")],
    out: Annotated[Path, typer.Option("--out", help="Parquet file to write.")],
    start: Annotated[
        str | None, typer.Option("--from", help="First day, YYYY-MM-DD (optional with --served).")
    ] = None,
    end: Annotated[
        str | None, typer.Option("--to", help="Last day, YYYY-MM-DD, inclusive (optional with --served).")
    ] = None,
    served: Annotated[
        bool,
        typer.Option(
            "--served",
            help="From the feature rows the server logged (events/served/ of an `events export` folder) "
            "instead of the point-in-time replay: the values that were served, labelled with the clicks.",
        ),
    ] = False,
    sample: Annotated[
        float,
        typer.Option(
            "--sample",
            help="Keep the rows of this share (0 < S <= 1) of the requests, drawn by request id (every "
            "build keeps the same ones); the replay still applies every event. For ranges too long to hold.",
        ),
    ] = 1.0,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Write a training set: features of each logged impression as of its request time (point-in-time
    replay), or with --served the feature rows the server logged; the same columns either way."""
    import pyarrow.parquet as pq

    from data.errors import ConfigError
    from data.layout import DataLayout

    try:
        first = date.fromisoformat(start) if start else None
        last = date.fromisoformat(end) if end else None
    except ValueError as exc:
        raise ConfigError(f"--from/--to must be YYYY-MM-DD: {exc}") from None
    summary: dict[str, object] = {}
    if not 0 < sample <= 1:
        raise ConfigError(f"--sample is a share of the requests in (0, 1], not {sample}")
    if served and sample < 1.0:
        raise ConfigError("--sample applies to the point-in-time replay, not to --served logs")
    if served:
        from features.served_dataset import build_served_training_set

        built = build_served_training_set(DataLayout(world), first, last)
        table = built.table
        summary["without_impression"] = built.without_impression
    else:
        from features.dataset import build_training_set

        if first is None or last is None:
            raise ConfigError("--from and --to are required without --served")
        with progress_bar(not as_json) as report:
            table = build_training_set(
                DataLayout(world), first, last, state.settings().features, progress=report, sample=sample
            )
        # As the ranker's cached tables record it: a reader can tell a sample from the whole range.
        metadata = {**(table.schema.metadata or {}), b"request_sample": repr(sample).encode()}
        table = table.replace_schema_metadata(metadata)
        summary["request_sample"] = sample
    out.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, out, compression="zstd")
    summary = {
        "rows": table.num_rows,
        "requests": len(set(table["request_id"].to_pylist())),
        **summary,
        "out": str(out),
    }
    if as_json:
        print_json(summary)
    else:
        console.print(summary)


@app.command()
def stream(
    until_idle: Annotated[
        bool, typer.Option("--until-idle", help="Stop when no events are waiting.")
    ] = False,
    consumer: Annotated[
        str | None, typer.Option("--consumer", help="Consumer name (default: host-based).")
    ] = None,
    max_seconds: Annotated[float | None, typer.Option("--max-seconds", min=0)] = None,
) -> None:
    """Consume the event stream and update the online features (at least once, applied once)."""
    from features.stream import StreamConsumer

    store = _store()
    worker = StreamConsumer(store, store.settings, consumer=consumer)
    stats = worker.run(until_idle=until_idle, max_seconds=max_seconds)
    console.print(stats)


@app.command("dead-letters")
def dead_letters(
    requeue: Annotated[
        str | None,
        typer.Option(
            "--requeue",
            metavar="KIND",
            help="Send back the events whose reason is of this kind (the text before its colon, as "
            "listed: 'not applied', 'no impression'...), once the cause is mended; their letters go.",
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the counts as JSON.")] = False,
) -> None:
    """The events the stream consumer could not apply, counted by kind of reason; each letter keeps the
    event, so `--requeue KIND` can send one kind back (an event counts once on every hash tag). Letters the
    cap removed to make room are counted apart: their events are lost."""
    from features import dead_letters as letters

    store = _store()
    requeued = letters.requeue(store, requeue) if requeue else 0
    counts = letters.summary(store)
    lost = letters.trimmed(store)
    if as_json:
        print_json({"dead_letters": counts, "requeued": requeued, "trimmed": lost})
        return
    if requeue:
        console.print(f"requeued {requeued} event(s) of kind {requeue!r}")
    for kind, n in counts.items():
        console.print(f"{n:>8,}  {kind}")
    if not counts:
        console.print("no dead letters")
    if lost:
        console.print(f"{lost:>8,}  older letters removed by the cap (dead_letters_max): events lost")
