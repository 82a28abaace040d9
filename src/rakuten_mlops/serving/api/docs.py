"""The interactive API docs (`/docs`, Swagger UI) and `/openapi.json`, when enabled.

Off in `RAKUTEN_ENV=prod` unless `RAKUTEN_API_DOCS=true`. The page loads Swagger UI from its
CDN, so it carries a Content-Security-Policy that allows exactly those two files and the
page's one inline script (by its SHA-256), nothing else.
"""

from __future__ import annotations

import base64
import hashlib
import re

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse

from rakuten_mlops.config import Settings

OPENAPI_URL = "/openapi.json"
SWAGGER_JS = "https://cdn.jsdelivr.net/npm/swagger-ui-dist@5/swagger-ui-bundle.js"
SWAGGER_CSS = "https://cdn.jsdelivr.net/npm/swagger-ui-dist@5/swagger-ui.css"
_INLINE_SCRIPT = re.compile(r"<script>(.*?)</script>", re.DOTALL)


def docs_page(title: str) -> tuple[bytes, str]:
    """The Swagger UI page and the Content-Security-Policy that lets exactly it run."""
    page = get_swagger_ui_html(
        openapi_url=OPENAPI_URL,
        title=title,
        swagger_js_url=SWAGGER_JS,
        swagger_css_url=SWAGGER_CSS,
        swagger_favicon_url="data:,",
    ).body
    page = bytes(page)
    hashes = " ".join(
        "'sha256-" + base64.b64encode(hashlib.sha256(script.encode()).digest()).decode() + "'"
        for script in _INLINE_SCRIPT.findall(page.decode())
    )
    policy = (
        f"default-src 'none'; script-src {SWAGGER_JS} {hashes}; style-src {SWAGGER_CSS}; "
        "img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; "
        "form-action 'self'"
    )
    return page, policy


def install_docs(app: FastAPI, settings: Settings) -> None:
    """Serve `/docs` with its policy when the docs are enabled (`/openapi.json` is set by
    `create_app` from the same setting)."""
    if not settings.docs_enabled():
        return
    page, policy = docs_page(f"{app.title} - docs")

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui() -> HTMLResponse:
        return HTMLResponse(
            page, headers={"Content-Security-Policy": policy, "Cache-Control": "no-store"}
        )
