"""``/``: the search page, one static HTML file with its script inline (no build step).

It is served with a Content-Security-Policy that allows exactly its own inline script and style (by their
sha256, computed from the file at import) and requests to this origin: an injected script or a foreign
resource does not run even if a response ever echoed one into the page. ``nosniff`` stops a browser from
reading a JSON answer as a script or page.
"""

from __future__ import annotations

import base64
import hashlib
import re
from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse

PAGE = Path(__file__).resolve().parents[1] / "static" / "index.html"
router = APIRouter(tags=["page"])


def _hashes(html: str, tag: str) -> str:
    """CSP source expressions of every inline ``<tag>`` element's text (what the browser hashes)."""
    bodies = re.findall(rf"<{tag}>(.*?)</{tag}>", html, flags=re.DOTALL)
    digests = (base64.b64encode(hashlib.sha256(b.encode("utf-8")).digest()).decode() for b in bodies)
    return " ".join(f"'sha256-{d}'" for d in digests)


def content_security_policy(html: str) -> str:
    return "; ".join(
        [
            "default-src 'none'",
            f"script-src {_hashes(html, 'script')}",
            f"style-src {_hashes(html, 'style')}",
            "connect-src 'self'",
            "img-src 'self'",
            "base-uri 'none'",
            "form-action 'self'",
            "frame-ancestors 'none'",
        ]
    )


HEADERS = {
    "Content-Security-Policy": content_security_policy(PAGE.read_text(encoding="utf-8")),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


@router.get("/", response_class=FileResponse, include_in_schema=False)
def page() -> FileResponse:
    return FileResponse(PAGE, media_type="text/html", headers=HEADERS)
