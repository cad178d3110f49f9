"""Builds the FastAPI app and nothing else: routers, middleware, the error handler, the lifespan.

``create_app(settings, world)`` loads the world's indexes and catalogue in the lifespan start-up (so each
uvicorn worker loads its own, and importing this module stays cheap); tests pass already loaded ``parts``.
``factory()`` is the zero-argument form uvicorn calls in each worker (``--factory``), reading the world from
``SMARTBLOCK_SERVE_WORLD``.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI
from starlette.concurrency import run_in_threadpool

from search.settings import Settings, get_settings
from serving import handlers
from serving.config import ServingSettings, serving_settings
from serving.deps import settings_dep
from serving.middleware import BodyLimit, CountRequests
from serving.routes import admin, events, health, metrics, page, search, users
from serving.runtime import Parts, Runtime, load_parts

WORLD_ENV = "SMARTBLOCK_SERVE_WORLD"


def create_app(
    settings: Settings | None = None,
    world: Path | None = None,
    *,
    serving: ServingSettings | None = None,
    parts: Parts | None = None,
) -> FastAPI:
    settings = settings or get_settings()
    serving = serving or serving_settings(settings)
    if parts is None and world is None:
        raise ValueError("create_app needs the world folder (or loaded parts)")

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        loaded = parts or await run_in_threadpool(load_parts, settings, Path(world))  # type: ignore[arg-type]
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
    app.dependency_overrides[settings_dep] = lambda: settings
    for router in (search.router, events.router, users.router, health.router, metrics.router, admin.router):
        app.include_router(router)
    app.include_router(page.router)
    handlers.install(app)
    # Outermost last: the body limit runs before anything reads the body.
    app.add_middleware(CountRequests, metrics=lambda: getattr(app.state.runtime, "metrics", None))
    app.add_middleware(BodyLimit, limit=serving.max_body_bytes)
    return app


def factory() -> FastAPI:
    world = os.environ.get(WORLD_ENV)
    if not world:
        raise RuntimeError(f"{WORLD_ENV} is not set: start the server with `smartblock serve --world DIR`")
    return create_app(get_settings(), Path(world))
