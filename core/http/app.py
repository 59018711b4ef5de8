"""The FastAPI application: one router per resource, the dashboard's static files at ``/``.

The OpenAPI page at ``/docs`` is Swagger UI served from the files the ``swagger-ui-bundle-v2``
package ships, not from a CDN, so it works on a machine without internet access.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse
from fastapi.staticfiles import StaticFiles
from swagger_ui_bundle import swagger_ui_path

from core.http import events, files, metrics, queue, runs, snapshots, status
from core.http.feed import EventFeed
from core.http.access import HttpContext

STATIC_DIR = Path(__file__).with_name("static")
SWAGGER_DIR = Path(str(swagger_ui_path))


def create_app(ctx: HttpContext) -> FastAPI:
    """The API, ``/metrics`` and the dashboard for the base dir of ``ctx``; OpenAPI page at ``/docs``."""
    app = FastAPI(
        title="trainctl",
        summary=f"Training daemon of {ctx.layout.root}",
        description="Mutating endpoints need `Authorization: Bearer TOKEN` (`trainctl http-token`).",
        docs_url=None,  # served below from local files; FastAPI's own page loads Swagger UI from a CDN
        redoc_url=None,
    )
    app.state.context = ctx
    app.state.registry = metrics.build_registry(ctx)
    app.state.feed = EventFeed(ctx)  # what every open event stream reads
    for module in (status, queue, snapshots, runs, events, files, metrics):
        app.include_router(module.router)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    app.mount("/docs-assets", StaticFiles(directory=SWAGGER_DIR), name="docs-assets")

    @app.get("/", include_in_schema=False)
    def dashboard() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html")

    @app.get("/docs", include_in_schema=False)
    def docs() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=app.openapi_url, title="trainctl API",
            swagger_js_url="/docs-assets/swagger-ui-bundle.js", swagger_css_url="/docs-assets/swagger-ui.css",
            swagger_favicon_url="/docs-assets/favicon-32x32.png",
        )

    return app
