"""The API as each uvicorn worker builds it: ``search.serve:factory`` (``smartblock serve`` starts it).

The roof owns the settings, so the zero-argument factory lives here: it reads the process settings and the
world folder from ``SMARTBLOCK_SERVE_WORLD`` and hands both to ``serving.app.create_app``.
"""

from __future__ import annotations

import os
from pathlib import Path

from fastapi import FastAPI

from search.settings import get_settings
from serving.app import create_app

WORLD_ENV = "SMARTBLOCK_SERVE_WORLD"


def factory() -> FastAPI:
    world = os.environ.get(WORLD_ENV)
    if not world:
        raise RuntimeError(f"{WORLD_ENV} is not set: start the server with `smartblock serve --world DIR`")
    return create_app(get_settings(), Path(world))
