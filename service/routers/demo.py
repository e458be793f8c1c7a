"""``GET /demo``: a page that tags what you type, through this service's own ``POST /v1/tag``.

The page is one file, ``service/static/demo/index.html``, with its CSS and script inline: it loads
nothing else and calls ``v1/tag`` by a relative URL, so it works offline and behind a proxy that
serves the app under a prefix. ``SLOTFILL_DEMO=false`` leaves the route out (``/demo`` is then a 404).

It is sent with a Content-Security-Policy that allows exactly its own inline style sheet and script
(by their SHA-256) and requests to this origin: even if a bug let a tagged text into the page as
markup, the browser would neither run nor fetch anything it names.
"""

from __future__ import annotations

import base64
import hashlib
import re
from functools import cache
from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import HTMLResponse

PAGE = Path(__file__).resolve().parents[1] / "static" / "demo" / "index.html"

router = APIRouter(tags=["demo"])

_INLINE = re.compile(r"<(script|style)>(.*?)</\1>", re.DOTALL)


def _sha256(source: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(source.encode("utf-8")).digest()).decode("ascii") + "'"


@cache
def page() -> tuple[bytes, dict[str, str]]:
    """The page and its headers, read once per process (the file ships with the package)."""
    html = PAGE.read_text(encoding="utf-8")
    hashes = {"script": [], "style": []}
    for kind, source in _INLINE.findall(html):
        hashes[kind].append(_sha256(source))
    policy = "; ".join([
        "default-src 'none'",
        f"script-src {' '.join(hashes['script'])}",
        f"style-src {' '.join(hashes['style'])}",
        "connect-src 'self'",  # POST v1/tag
        "img-src data:",  # the page's empty icon, which spares the browser a /favicon.ico request
        "base-uri 'none'",
        "form-action 'none'",  # the form is submitted by the script, never navigated
        "frame-ancestors 'none'",
    ])
    headers = {"Content-Security-Policy": policy, "X-Content-Type-Options": "nosniff",
               "Referrer-Policy": "no-referrer", "Cache-Control": "no-cache"}
    return html.encode("utf-8"), headers


@router.get("/demo", include_in_schema=False, response_class=HTMLResponse)
async def demo() -> HTMLResponse:
    body, headers = page()
    return HTMLResponse(body, headers=headers)
