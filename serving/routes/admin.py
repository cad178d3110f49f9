"""``/admin``: the served model line (list, promote, roll back) and the experiment config; needs the key."""

from __future__ import annotations

from fastapi import APIRouter

from ranking.errors import RegistryError
from serving.deps import AdminKey, PipelineDep
from serving.ranker import ServedModel
from serving.schemas import ExperimentOut, ModelChangeOut, ModelOut, ModelsOut, PromoteIn

router = APIRouter(prefix="/admin", tags=["admin"], dependencies=[AdminKey])


@router.get("/models", response_model=ModelsOut)
def list_models(pipeline: PipelineDep) -> ModelsOut:
    line = pipeline.settings.model_line
    try:
        rows = pipeline.registry.describe(line)
    except RegistryError:  # the line does not exist yet: nothing trained
        rows = []
    served = pipeline.model.version if pipeline.model else None
    keep = set(ModelOut.model_fields)
    versions = [ModelOut(**{k: r.get(k) for k in keep}) for r in rows]
    return ModelsOut(line=line, served=served, degraded=pipeline.served.degraded, versions=versions)


@router.post("/models/promote", response_model=ModelChangeOut)
def promote(body: PromoteIn, pipeline: PipelineDep) -> ModelChangeOut:
    """Promote a version and swap it in. It is trial-loaded in a child process, then loaded here first: a
    model that crashes, fails to load or scores nonsense is refused (422), one serving cannot use (409), and
    the served model stays."""
    line = pipeline.settings.model_line
    ServedModel.from_registry(pipeline.registry, line, body.version)
    current = pipeline.registry.promote(line, body.version, force=body.force)
    served = pipeline.reload_model()
    return ModelChangeOut(line=line, current=current, served=served.version if served else None)


@router.post("/models/rollback", response_model=ModelChangeOut)
def rollback(pipeline: PipelineDep) -> ModelChangeOut:
    line = pipeline.settings.model_line
    current = pipeline.registry.rollback(line)
    served = pipeline.reload_model()
    return ModelChangeOut(line=line, current=current, served=served.version if served else None)


@router.post("/experiments/reload", response_model=ExperimentOut)
def reload_experiments(pipeline: PipelineDep) -> ExperimentOut:
    """Re-read the experiment file now (the server also checks it every few seconds); a bad file is refused
    with the reason and the loaded one stays."""
    assigner = pipeline.reload_experiments()
    config = assigner.config
    return ExperimentOut(
        digest=assigner.digest,
        experiments=[e.name for e in config.experiments()],
        rankers=sorted(config.rankers()),
    )
