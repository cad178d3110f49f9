"""Retrieval quality of each encoder backend against the torch fp32 reference. A script, not a test:

    python benchmarks/bench_encoder_quality.py --world worlds/tiny [--beir ../shared/data/ir/cisi]
                                               [--backends torch,onnx-fp32,onnx-int8] [--work DIR] [--json]

For each backend (both encoders switched together) the SPLADE and dense indexes are built from scratch in a
folder of their own, then scored as ``smartblock retrieval eval`` scores them: recall@10 and @100 on the
world's last days (``evaluate_world``) and, with ``--beir``, nDCG@10 and recall@100 on the collection's test
split (``evaluate_beir``). Prints each value and its difference from torch; the tests hold it within 0.01.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

from retrieval.config import RetrievalSettings
from retrieval.evaluate import evaluate_beir, evaluate_world

os.environ.setdefault("HF_HUB_OFFLINE", "1")

BACKENDS = {
    "torch": {"backend": "torch", "int8": False},
    "onnx-fp32": {"backend": "onnx", "int8": False},
    "onnx-int8": {"backend": "onnx", "int8": True},
}
ENCODERS = ("splade", "dense")


def settings_for(label: str, index_dir: Path) -> RetrievalSettings:
    base = RetrievalSettings()
    return RetrievalSettings(
        index_dir=index_dir,
        members=list(ENCODERS),
        splade=base.splade.model_copy(update=BACKENDS[label]),
        dense=base.dense.model_copy(update=BACKENDS[label]),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--world", type=Path, required=True)
    parser.add_argument("--beir", type=Path, default=None, help="A BEIR folder, e.g. ../shared/data/ir/cisi.")
    parser.add_argument("--backends", default=",".join(BACKENDS))
    parser.add_argument("--work", type=Path, default=None, help="Where indexes go (default: a temp folder).")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    work = args.work or Path(tempfile.mkdtemp(prefix="encoder-quality-"))
    report: dict[str, dict[str, float]] = {}
    for label in args.backends.split(","):
        row: dict[str, float] = {}
        world = evaluate_world(args.world, settings_for(label, work / label / "world"))
        for name in ENCODERS:
            for k in (10, 100):  # the tiny world's 504 blocks saturate recall@100: @10 shows more
                row[f"{name} world recall@{k}"] = world[name][f"recall@{k}"]
        if args.beir is not None:
            beir = evaluate_beir(
                args.beir, settings_for(label, work / label / "beir"), work / label / "beir", members=ENCODERS
            )
            for name in ENCODERS:
                row[f"{name} beir ndcg@10"] = beir[name]["ndcg@10"]
                row[f"{name} beir recall@100"] = beir[name]["recall@100"]
        report[label] = row
        print(f"{label}: {row}", flush=True)
    if args.json:
        print(json.dumps(report, indent=2))
        return
    reference = report.get("torch")
    metrics = list(next(iter(report.values())))
    print(f"\n{'metric':28s}" + "".join(f"{label:>20s}" for label in report))
    for metric in metrics:
        cells = []
        for row in report.values():
            delta = f" ({row[metric] - reference[metric]:+.4f})" if reference else ""
            cells.append(f"{row[metric]:.4f}{delta}".rjust(20))
        print(f"{metric:28s}" + "".join(cells))


if __name__ == "__main__":
    main()
