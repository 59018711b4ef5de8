"""The FastAPI application: one router per resource, the dashboard's static files at ``/``."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

from core.http import events, files, metrics, queue, runs, snapshots, status
from core.http.access import HttpContext

STATIC_DIR = Path(__file__).with_name("static")


def create_app(ctx: HttpContext) -> FastAPI:
    """The API, ``/metrics`` and the dashboard for the base dir of ``ctx``; OpenAPI page at ``/docs``."""
    app = FastAPI(
        title="trainctl",
        summary=f"Training daemon of {ctx.layout.root}",
        description="Mutating endpoints need `Authorization: Bearer TOKEN` (`trainctl http-token`).",
    )
    app.state.context = ctx
    app.state.registry = metrics.build_registry(ctx)
    for module in (status, queue, snapshots, runs, events, files, metrics):
        app.include_router(module.router)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    @app.get("/", include_in_schema=False)
    def dashboard() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html")

    return app
