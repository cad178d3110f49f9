"""Reading a world's logs with every row checked against its contract: column checks against row by row.

    python benchmarks/bench_row_checks.py --world worlds/small [--days 3] [--json]

For each event kind, every day file is read three ways in this process: with the schema checks only (the
floor: Parquet decoding and casts), with the column checks (``data.row_checks``, what ``read_table`` does
now) and with one pydantic ``model_validate`` per row (what it did before, and still does for a contract
with a rule that has no column version). Prints per-file p50/p99 seconds, rows per second and the ratio of
each way to row by row. ``--days N`` reads the first N days only (row by row takes about 17 us a row).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

from data.io import _validate_each_row, read_table
from data.layout import EVENT_CONTRACTS, DataLayout
from data.row_checks import NotCheckable, invalid_rows
from data.schemas import arrow_schema


def _row_by_row(path: Path, contract: type) -> pa.Table:
    table = read_table(path, contract, validate_rows=False)
    _validate_each_row(table, contract, path)
    return table


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--world", type=Path, required=True)
    parser.add_argument("--days", type=int, default=0, help="Only the first N days; 0: all.")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    layout = DataLayout(args.world)
    ways = {
        "schema only": lambda p, c: read_table(p, c, validate_rows=False),
        "column checks": lambda p, c: read_table(p, c),
        "row by row": _row_by_row,
    }
    report: dict[str, dict] = {}
    for kind, contract in EVENT_CONTRACTS.items():
        if not layout.events_dir(kind).is_dir():  # a world logs no served features
            continue
        try:
            invalid_rows(arrow_schema(contract).empty_table(), contract)
        except NotCheckable:  # checked row by row either way (served features): nothing to compare
            continue
        days = layout.days(kind)
        days = days[: args.days] if args.days else days
        files = [p for d in days for p in layout.day_files(kind, d)]
        if not files:
            continue
        rows = 0
        seconds: dict[str, list[float]] = {name: [] for name in ways}
        for path in files:
            for name, read in ways.items():
                began = time.perf_counter()
                table = read(path, contract)
                seconds[name].append(time.perf_counter() - began)
            rows += table.num_rows
            assert not invalid_rows(table, contract).any()
        base = sum(seconds["row by row"])
        report[kind] = {
            "files": len(files),
            "rows": rows,
            **{
                name: {
                    "total_s": round(sum(s), 2),
                    "p50_s": round(float(np.percentile(s, 50)), 3),
                    "p99_s": round(float(np.percentile(s, 99)), 3),
                    "rows_per_s": round(rows / max(sum(s), 1e-9)),
                    "x_vs_row_by_row": round(base / max(sum(s), 1e-9), 1),
                }
                for name, s in seconds.items()
            },
        }
    if args.json:
        print(json.dumps({"world": str(args.world), "kinds": report}, indent=2))
        return
    for kind, r in report.items():
        print(f"{kind}: {r['files']} files, {r['rows']:,} rows")
        for name in ways:
            w = r[name]
            print(
                f"  {name:<14} {w['total_s']:8.2f} s  p50 {w['p50_s']:.3f} s  p99 {w['p99_s']:.3f} s  "
                f"{w['rows_per_s']:>10,} rows/s  x{w['x_vs_row_by_row']} vs row by row"
            )


if __name__ == "__main__":
    main()
