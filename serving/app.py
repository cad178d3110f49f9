"""Builds the FastAPI app and nothing else: routers, middleware, the error handler, the lifespan.

``create_app(settings, world)`` loads the world's indexes and catalogue in the lifespan start-up (so each
uvicorn worker loads its own, and importing this module stays cheap); tests pass already loaded ``parts``.
The zero-argument form uvicorn calls in each worker (``--factory``) lives on the roof, which owns the
settings: ``search.serve.factory``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI
from starlette.concurrency import run_in_threadpool

from serving import handlers
from serving.config import ServingSettings, StageSettings, serving_settings
from serving.middleware import BodyGuard, CountRequests
from serving.routes import admin, events, health, metrics, page, search, users
from serving.runtime import Parts, Runtime, load_parts


def create_app(
    settings: StageSettings,
    world: Path | None = None,
    *,
    serving: ServingSettings | None = None,
    parts: Parts | None = None,
) -> FastAPI:
    serving = serving or serving_settings(settings)
    if parts is None and world is None:
        raise ValueError("create_app needs the world folder (or loaded parts)")

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        loaded = parts or await run_in_threadpool(
            load_parts,
            settings,
            Path(world),
            serving.warmup_queries,  # type: ignore[arg-type]
        )
        runtime = await run_in_threadpool(Runtime.start, settings, serving, loaded)
        app.state.runtime = runtime
        try:
            yield
        finally:
            runtime.stop()
            app.state.runtime = None

    app = FastAPI(
        title="smartblock",
        summary="Personalized smart-block search: ranked blocks for a query and a user.",
        version="0.1.0",
        lifespan=lifespan,
    )
    app.state.runtime = None
    for router in (search.router, events.router, users.router, health.router, metrics.router, admin.router):
        app.include_router(router)
    app.include_router(page.router)
    handlers.install(app)
    # Outermost last: the body guard runs before anything reads the body.
    app.add_middleware(CountRequests, metrics=lambda: getattr(app.state.runtime, "metrics", None))
    app.add_middleware(BodyGuard, limit=serving.max_body_bytes, timeout_s=serving.body_timeout_s)
    return app
