"""The web client: the page at `/` and its assets under `/assets/`, built from web/ by Vite
(`make web`) into WEBAPP_DIR. The API stays under /v1; nothing here is in the OpenAPI document.

The page carries its own Content-Security-Policy: only this origin's scripts, styles, images and
API (no inline code, no other site, no framing), so that an injected string can neither run
nor send a token anywhere."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.responses import FileResponse
from starlette.responses import Response
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

from facerestore_common.logging import get_logger

log = get_logger(__name__)

PAGE_CSP = "; ".join(
    (
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        # blob: is the local preview of a photo before it is uploaded.
        "img-src 'self' blob:",
        "connect-src 'self'",
        "manifest-src 'self'",
        "form-action 'self'",
        "base-uri 'none'",
        "frame-ancestors 'none'",
    )
)
PAGE_HEADERS = {
    "Content-Security-Policy": PAGE_CSP,
    # The page is small and names its hashed assets: always ask whether it changed.
    "Cache-Control": "no-cache",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}
FILE_HEADERS = {"Cache-Control": "public, max-age=3600", "X-Content-Type-Options": "nosniff"}
# Vite names every asset after its content's hash.
ASSET_CACHE = "public, max-age=31536000, immutable"


class _HashedAssets(StaticFiles):
    async def get_response(self, path: str, scope: Scope) -> Response:
        response = await super().get_response(path, scope)
        if response.status_code in (200, 304):
            response.headers["Cache-Control"] = ASSET_CACHE
            response.headers["X-Content-Type-Options"] = "nosniff"
        return response


def install(app: FastAPI, directory: str) -> None:
    """Serves the built web app from `directory` (empty: none); without a build the API runs alone."""
    if not directory:
        return
    root = Path(directory).resolve()
    index = root / "index.html"
    if not index.is_file():
        log.warning("webapp_not_built", directory=str(root), hint="run `make web`")
        return

    async def page() -> FileResponse:
        return FileResponse(index, media_type="text/html; charset=utf-8", headers=PAGE_HEADERS)

    app.add_api_route("/", page, methods=["GET"], include_in_schema=False, name="webapp")
    for extra in sorted(root.iterdir()):
        # Files copied from web/public (the icon), served from the root as the page names them.
        if extra.is_file() and extra.name != "index.html":
            app.add_api_route(f"/{extra.name}", _file(extra), methods=["GET"], include_in_schema=False)
    if (root / "assets").is_dir():
        app.mount("/assets", _HashedAssets(directory=root / "assets"), name="webapp-assets")


def _file(path: Path) -> Any:
    async def serve() -> FileResponse:
        return FileResponse(path, headers=FILE_HEADERS)

    return serve
