"""Retrieval quality of each encoder backend against the torch fp32 reference. A script, not a test:

    python benchmarks/bench_encoder_quality.py --world worlds/tiny [--beir ../shared/data/ir/cisi]
                                               [--backends torch,onnx-fp32,onnx-int8[,...]]
                                               [--paired] [--work DIR] [--json]

For each backend (both encoders switched together) the SPLADE and dense indexes are built from scratch in a
folder of their own, then scored as ``smartblock retrieval eval`` scores them: recall@10 and @100 on the
world's last days (``evaluate_world``) and, with ``--beir``, nDCG@10 and recall@100 on the collection's test
split (``evaluate_beir``). Prints each value and its difference from torch; the tests hold it within 0.01.

``--paired`` (with ``--beir``) also scores every judged query of the collection and prints each backend's
difference from torch with a 95% paired-bootstrap interval, over all judged queries and over the test split:
how far a mean over a few dozen queries can move without any real change. ``onnx-int8-all`` quantises every
product unsmoothed; ``onnx-int8-layer0`` keeps the first layer fp32, the dense default before the smoothing
(SPLADE's default was every product int8). ``--json`` prints
``{"backends": {label: metrics}, "paired": {label: differences}}``.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

import numpy as np
from bench_encoders import LAYER0_FP32

from retrieval.config import PLAIN_INT8, RetrievalSettings
from retrieval.evaluate import beir_per_query, evaluate_beir, evaluate_world

os.environ.setdefault("HF_HUB_OFFLINE", "1")

BACKENDS = {
    "torch": {"backend": "torch", "int8": False},
    "onnx-fp32": {"backend": "onnx", "int8": False},
    "onnx-int8": {"backend": "onnx", "int8": True},
    "onnx-int8-all": PLAIN_INT8,
    "onnx-int8-layer0": LAYER0_FP32,
}
BOOTSTRAP = 4000
ENCODERS = ("splade", "dense")


def settings_for(label: str, index_dir: Path) -> RetrievalSettings:
    base = RetrievalSettings()
    return RetrievalSettings(
        index_dir=index_dir,
        members=list(ENCODERS),
        splade=base.splade.model_copy(update=BACKENDS[label]),
        dense=base.dense.model_copy(update=BACKENDS[label]),
    )


def paired(per_query: dict[str, dict], seed: int = 0) -> dict[str, dict[str, float]]:
    """Each backend's mean difference from torch per encoder, metric and query set, with a 95% interval."""
    rng = np.random.default_rng(seed)
    reference = per_query["torch"]
    test = reference["_test"]["mask"]
    report: dict[str, dict[str, float]] = {}
    for label, scores in per_query.items():
        if label == "torch":
            continue
        row: dict[str, float] = {}
        for name in ENCODERS:
            for metric in ("ndcg@10", "recall@100"):
                diff = scores[name][metric] - reference[name][metric]
                for subset, d in (("all", diff), ("test", diff[test])):
                    means = d[rng.integers(0, len(d), (BOOTSTRAP, len(d)))].mean(axis=1)
                    low, high = np.percentile(means, [2.5, 97.5])
                    key = f"{name} {metric} {subset}({len(d)})"
                    row[key] = round(float(d.mean()), 4)
                    row[key + " ci95"] = f"[{low:+.4f}, {high:+.4f}]"  # type: ignore[assignment]
        report[label] = row
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--world", type=Path, required=True)
    parser.add_argument("--beir", type=Path, default=None, help="A BEIR folder, e.g. ../shared/data/ir/cisi.")
    parser.add_argument("--backends", default=",".join(BACKENDS))
    parser.add_argument("--work", type=Path, default=None, help="Where indexes go (default: a temp folder).")
    parser.add_argument("--paired", action="store_true", help="Per-query differences from torch (--beir).")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if args.paired and (args.beir is None or "torch" not in args.backends.split(",")):
        parser.error("--paired needs --beir and the torch backend (the reference)")
    per_query: dict[str, dict] = {}

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
            if args.paired:
                per_query[label] = beir_per_query(
                    args.beir, settings_for(label, work / label / "beir"), work / label / "beir", ENCODERS
                )
        report[label] = row
        print(f"{label}: {row}", flush=True)
    differences = paired(per_query) if "torch" in per_query else {}
    if args.json:
        print(json.dumps({"backends": report, "paired": differences}, indent=2))
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
    for label, row in differences.items():
        print(f"\n{label} minus torch, per judged query (mean, 95% paired bootstrap):")
        for key, value in row.items():
            if not key.endswith("ci95"):
                print(f"  {key:36s} {value:+.4f}  {row[key + ' ci95']}")


if __name__ == "__main__":
    main()
