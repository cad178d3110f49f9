"""The model catalogue: type strings to ranker classes (each with its config), built from settings, loaded."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ranking.base import Ranker, read_manifest
from ranking.config import RankingSettings
from ranking.ensemble import DASALCEnsembleRanker
from ranking.errors import ParameterError
from ranking.lgbm import LightGBMRanker
from ranking.torch_rankers import DASALCRanker, DCNRanker, LinearRanker, MLPRanker

#: Model type -> ranker class; ``MODELS[t].config_class`` is the type's config.
MODELS: dict[str, type[Ranker]] = {
    cls.kind: cls
    for cls in (LinearRanker, MLPRanker, DCNRanker, DASALCRanker, DASALCEnsembleRanker, LightGBMRanker)
}


def parse_model_list(spec: str) -> list[str]:
    """``"lgbm,dcn"`` -> ``["lgbm", "dcn"]``; an unknown name raises ``ParameterError``."""
    names = [n.strip() for n in spec.split(",") if n.strip()]
    unknown = [n for n in names if n not in MODELS]
    if unknown or not names:
        raise ParameterError(f"unknown model(s) {unknown or [spec]}; choose from {', '.join(MODELS)}")
    return names


def params_from_settings(settings: RankingSettings, seed: int | None = None) -> dict[str, dict[str, Any]]:
    """Each model type's parameters that ``settings`` choose; the others keep their config's defaults.

    The one place the settings keys (``train``, ``threads``, ``dasalc``, ``ensemble_*``, ``lgbm_*``) become
    model parameters; ``seed`` replaces ``train.seed``.
    """
    train = settings.train if seed is None else settings.train.model_copy(update={"seed": seed})
    torch = {"train": train, "threads": settings.threads}
    dasalc = {**settings.dasalc.model_dump(), **torch}
    return {
        "linear": torch,
        "mlp": torch,
        "dcn": torch,
        "dasalc": dasalc,
        "dasalc-ens": {**dasalc, "n_members": settings.ensemble_size, "refit": settings.ensemble_refit},
        "lgbm": {
            "n_estimators": settings.lgbm_trees,
            "learning_rate": settings.lgbm_learning_rate,
            "num_leaves": settings.lgbm_leaves,
            "max_weight": settings.lgbm_max_weight,
            "eval_k": train.eval_k,
            "seed": train.seed,
            "threads": settings.threads,
        },
    }


def make_ranker(name: str, settings: RankingSettings | None = None, seed: int | None = None) -> Ranker:
    """A fresh ranker of type ``name``: its config from ``params_from_settings``, validated."""
    if name not in MODELS:
        raise ParameterError(f"unknown model '{name}'; choose from {', '.join(MODELS)}")
    ranker_class = MODELS[name]
    params = params_from_settings(settings or RankingSettings(), seed)[name]
    return ranker_class.from_config(ranker_class.config_class.validated(params))


def load_ranker(folder: Path | str) -> Ranker:
    """Load whatever ranker ``folder`` holds, dispatching on its manifest's model type."""
    folder = Path(folder)
    kind = read_manifest(folder)["kind"]
    if kind not in MODELS:
        raise ParameterError(f"{folder}: unknown model type '{kind}'")
    return MODELS[kind].load(folder)
