"""``smartblock experiment analyze --plot``: the analysis as a PNG (matplotlib, Agg backend, no display).

One row per experiment: a bar per variant for CTR, clicks@3 and MRR with their 95% user-level confidence
intervals as error bars, and for interleaving variants the share of decided impressions won by ranker b with
its interval (0.5, dashed, is no preference).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from search.experiments.analysis import METRICS


def plot_analysis(report: dict[str, Any], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    experiments = report["experiments"]
    cols = len(METRICS) + 1
    fig, axes = plt.subplots(
        len(experiments), cols, figsize=(3.4 * cols, 3.2 * len(experiments)), squeeze=False
    )
    for row, exp in zip(axes, experiments, strict=True):
        variants = exp["variants"]
        names = [v["name"] for v in variants]
        colors = ["#7f7f7f" if n == exp["control"] else f"C{i}" for i, n in enumerate(names)]
        for ax, metric in zip(row, METRICS, strict=False):
            values, lower, upper = [], [], []
            for v in variants:
                m = v["metrics"][metric]
                value = m["value"] or 0.0
                lo, hi = (value if x is None else x for x in m["ci"])
                values.append(value)
                lower.append(max(value - lo, 0.0))
                upper.append(max(hi - value, 0.0))
            ax.bar(names, values, yerr=[lower, upper], capsize=4, color=colors)
            ax.set_title(f"{exp['experiment']}: {metric}", fontsize=9)
            ax.tick_params(axis="x", labelsize=8, rotation=20)
            srm = " (SRM!)" if exp["srm"]["mismatch"] else ""
            ax.set_xlabel(f"{exp['users']} users{srm}", fontsize=8)
        ax = row[-1]
        inter = [v for v in variants if v.get("interleaving")]
        if not inter:
            ax.axis("off")
            continue
        labels, shares, lower, upper = [], [], [], []
        for v in inter:
            il = v["interleaving"]
            share = il["preference_b"] if il["preference_b"] is not None else 0.5
            lo, hi = (share if x is None else x for x in il["preference_b_ci"])
            labels.append(f"{il['b']} over\n{il['a']}")
            shares.append(share)
            lower.append(max(share - lo, 0.0))
            upper.append(max(hi - share, 0.0))
        ax.bar(labels, shares, yerr=[lower, upper], capsize=4, color="C4")
        ax.axhline(0.5, color="k", linestyle="--", linewidth=0.8)
        ax.set_ylim(0, 1)
        ax.set_title(f"{exp['experiment']}: interleaving preference", fontsize=9)
        ax.tick_params(axis="x", labelsize=8)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
