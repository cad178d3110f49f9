"""``/``: the search page, one static HTML file with its script inline (no build step)."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse

PAGE = Path(__file__).resolve().parents[1] / "static" / "index.html"
router = APIRouter(tags=["page"])


@router.get("/", response_class=FileResponse, include_in_schema=False)
def page() -> FileResponse:
    return FileResponse(PAGE, media_type="text/html")
