"""``GET /docs``: Swagger UI served from files shipped in the package (``service/static/swagger-ui``).

FastAPI's own docs page loads Swagger UI's script and style sheet from a CDN and its icon from another
site, so on a machine without internet access it stays blank. Here every asset the page references is
under ``/docs/assets`` on the same server, the page loads the schema from ``/openapi.json`` beside it,
and Swagger UI's online validator badge (which calls out to validator.swagger.io) is off.
ReDoc (``/redoc``, also from a CDN) is not served.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse
from starlette.staticfiles import StaticFiles

SWAGGER_UI_VERSION = "5.35.0"  # the npm package swagger-ui-dist, unmodified (see its README.md)
SWAGGER_UI_DIR = Path(__file__).resolve().parent / "static" / "swagger-ui"
DOCS_PATH = "/docs"
ASSETS_PATH = "/docs/assets"


def install_docs(app: FastAPI) -> None:
    """Add ``/docs`` and the assets it loads (``/docs/assets/...``) to ``app`` (built with ``docs_url=None``)."""
    app.mount(ASSETS_PATH, StaticFiles(directory=SWAGGER_UI_DIR), name="docs-assets")

    @app.get(DOCS_PATH, include_in_schema=False)
    async def docs(request: Request) -> HTMLResponse:
        # Behind a proxy that strips a prefix, root_path is that prefix: the links must carry it.
        root = request.scope.get("root_path", "").rstrip("/")
        return get_swagger_ui_html(
            openapi_url=f"{root}{app.openapi_url}",
            title=f"{app.title} {app.version} - API docs",
            swagger_js_url=f"{root}{ASSETS_PATH}/swagger-ui-bundle.js",
            swagger_css_url=f"{root}{ASSETS_PATH}/swagger-ui.css",
            swagger_favicon_url=f"{root}{ASSETS_PATH}/favicon-32x32.png",
            swagger_ui_parameters={"validatorUrl": None},
        )
