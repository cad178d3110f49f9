"""Typed dependencies of the routes: the runtime's parts and the admin key check.

All ``async def``: each only reads attributes or compares a key, and FastAPI runs a plain ``def`` dependency
in its thread pool, a round trip between the event loop and a worker thread per dependency per request.
"""

from __future__ import annotations

import secrets
from typing import Annotated

from fastapi import Depends, HTTPException, Request, Security, status
from fastapi.security import APIKeyHeader
from pydantic import SecretStr

from features.store import FeatureStore
from serving.config import ServingSettings
from serving.pipeline import SearchPipeline
from serving.runtime import Runtime


async def runtime_dep(request: Request) -> Runtime:
    runtime = getattr(request.app.state, "runtime", None)
    if runtime is None:  # only between process start and the end of the lifespan start-up
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, "the server is still loading")
    return runtime


RuntimeDep = Annotated[Runtime, Depends(runtime_dep)]


async def serving_dep(runtime: RuntimeDep) -> ServingSettings:
    return runtime.serving


async def pipeline_dep(runtime: RuntimeDep) -> SearchPipeline:
    return runtime.pipeline


async def store_dep(runtime: RuntimeDep) -> FeatureStore:
    return runtime.store


ServingDep = Annotated[ServingSettings, Depends(serving_dep)]
PipelineDep = Annotated[SearchPipeline, Depends(pipeline_dep)]
StoreDep = Annotated[FeatureStore, Depends(store_dep)]

_api_key_header = APIKeyHeader(name="X-API-Key", auto_error=False, description="The admin key.")
_write_key_header = APIKeyHeader(
    name="X-Write-Key", auto_error=False, description="The events key, when serving.write_key is set."
)


def _check_key(header: str, key: str | None, expected: SecretStr | None) -> None:
    """401 without a key, 403 with a wrong one (or with none configured to compare against)."""
    if not key:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED, f"missing {header} header", headers={"WWW-Authenticate": "APIKey"}
        )
    # compare_digest takes time independent of where the strings differ: no timing oracle on the key.
    # Header values arrive as latin-1 text: encoding them back cannot fail.
    if expected is None or not secrets.compare_digest(
        key.encode("latin-1", "replace"), expected.get_secret_value().encode()
    ):
        raise HTTPException(status.HTTP_403_FORBIDDEN, "invalid API key")


async def require_api_key(serving: ServingDep, key: Annotated[str | None, Security(_api_key_header)]) -> None:
    """The admin key; when none is configured the admin API is off (403)."""
    _check_key("X-API-Key", key, serving.api_key)


async def require_write_key(
    serving: ServingDep, key: Annotated[str | None, Security(_write_key_header)]
) -> None:
    """The events key, only when one is configured: without it /events is open (the search page posts)."""
    if serving.write_key is not None:
        _check_key("X-Write-Key", key, serving.write_key)


AdminKey = Depends(require_api_key)
WriteKey = Depends(require_write_key)
