"""The model catalogue: model type strings to ranker classes, built from settings, loaded from folders."""

from __future__ import annotations

from pathlib import Path

from ranking.base import Ranker, read_manifest
from ranking.config import RankingSettings
from ranking.ensemble import DASALCEnsembleRanker
from ranking.errors import ParameterError
from ranking.lgbm import LightGBMRanker
from ranking.torch_rankers import DASALCRanker, DCNRanker, LinearRanker, MLPRanker

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


def make_ranker(name: str, settings: RankingSettings | None = None, seed: int | None = None) -> Ranker:
    """A fresh ranker of type ``name`` with the defaults and training settings from ``settings``."""
    settings = settings or RankingSettings()
    if name not in MODELS:
        raise ParameterError(f"unknown model '{name}'; choose from {', '.join(MODELS)}")
    train = settings.train if seed is None else settings.train.model_copy(update={"seed": seed})
    threads = settings.threads
    if name == "lgbm":
        return LightGBMRanker(
            n_estimators=settings.lgbm_trees,
            learning_rate=settings.lgbm_learning_rate,
            num_leaves=settings.lgbm_leaves,
            eval_k=train.eval_k,
            seed=train.seed,
            threads=threads,
        )
    if name == "dasalc-ens":
        return DASALCEnsembleRanker(
            n_members=settings.ensemble_size,
            refit=settings.ensemble_refit,
            **settings.dasalc.model_dump(),
            train=train,
            threads=threads,
        )
    if name == "dasalc":
        return DASALCRanker(**settings.dasalc.model_dump(), train=train, threads=threads)
    cls = MODELS[name]
    return cls(train=train, threads=threads)  # type: ignore[call-arg]


def load_ranker(folder: Path | str) -> Ranker:
    """Load whatever ranker ``folder`` holds, dispatching on its manifest's model type."""
    folder = Path(folder)
    kind = read_manifest(folder)["kind"]
    if kind not in MODELS:
        raise ParameterError(f"{folder}: unknown model type '{kind}'")
    return MODELS[kind].load(folder)
