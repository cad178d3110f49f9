"""The one place errors become HTTP answers: each ``SmartblockError`` class has a status; nothing leaks a
stack trace (unexpected errors are logged here and answered with a generic 500)."""

from __future__ import annotations

import logging
import math
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from data.errors import ConfigError, DataError, SmartblockError
from features.connection import StoreUnavailable
from ranking.errors import ModelRefused, PromotionRefused, RegistryError
from retrieval.errors import QueryError
from serving.config import ServingSettings
from serving.errors import ModelIncompatible, NotReady

log = logging.getLogger("smartblock.serving")

# Most specific first: the first matching class decides.
STATUS: tuple[tuple[type[SmartblockError], int], ...] = (
    (QueryError, 422),
    (DataError, 422),
    (ModelRefused, 422),  # the named version's files or trial load failed: unusable as asked
    (PromotionRefused, 409),
    (ModelIncompatible, 409),
    (RegistryError, 409),
    (ConfigError, 400),
    (NotReady, 503),
    (StoreUnavailable, 503),
)


def status_of(exc: SmartblockError) -> int:
    return next((code for cls, code in STATUS if isinstance(exc, cls)), 500)


def safe_text(value: object) -> str:
    """``value`` as text any UTF-8 encoder takes: a lone surrogate becomes its escape (``\\ud800``)."""
    return str(value).encode("utf-8", "backslashreplace").decode("utf-8")


def validation_detail(errors: Any) -> list[dict[str, Any]]:
    """Where, what and why of each validation error, and nothing the client sent: echoing the input would
    fail to encode on a lone surrogate (a 500 from the error handler itself) and repeat junk back."""
    return [
        {
            "loc": [p if isinstance(p, int) else safe_text(p) for p in e.get("loc", ())],
            "msg": safe_text(e.get("msg", "")),
            "type": safe_text(e.get("type", "")),
        }
        for e in errors
    ]


def install(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse({"detail": validation_detail(exc.errors())}, status_code=422)

    @app.exception_handler(SmartblockError)
    async def _smartblock(request: Request, exc: SmartblockError) -> JSONResponse:
        code = status_of(exc)
        runtime = getattr(request.app.state, "runtime", None)
        metrics = getattr(runtime, "metrics", None)
        if metrics is not None:
            metrics.errors.labels(type(exc).__name__).inc()
        if code >= 500:
            log.error("%s on %s: %s", type(exc).__name__, request.url.path, exc)
        headers = None
        if isinstance(exc, StoreUnavailable):
            # Nothing was done: worth sending again once the breaker may have closed.
            serving = getattr(runtime, "serving", None) or ServingSettings()
            headers = {"Retry-After": str(max(1, math.ceil(serving.breaker_cooldown_s)))}
        body = {"error": str(exc), "kind": type(exc).__name__}
        return JSONResponse(body, status_code=code, headers=headers)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error on %s", request.url.path)
        runtime = getattr(request.app.state, "runtime", None)
        metrics = getattr(runtime, "metrics", None)
        if metrics is not None:
            metrics.errors.labels(type(exc).__name__).inc()
        return JSONResponse({"error": "internal error"}, status_code=500)
