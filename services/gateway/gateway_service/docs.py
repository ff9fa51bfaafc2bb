"""The interactive API documentation (Swagger UI at /docs, ReDoc at /redoc), served entirely from
this gateway: the Swagger UI and ReDoc files come from the `fastapi-offline` package (no CDN),
so the pages work without internet access.

Each page carries a Content-Security-Policy that allows only this origin's scripts plus the
page's own inline start-up script (by its hash), and forbids framing (frame-ancestors)."""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Awaitable, Callable
from importlib.resources import files
from pathlib import Path

from fastapi import FastAPI
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.responses import HTMLResponse
from starlette.responses import Response
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

ASSETS_PATH = "/docs/assets"
ASSETS_CACHE = "public, max-age=86400"
_INLINE = re.compile(r"<(script|style)>(.*?)</\1>", re.DOTALL)


def asset_directory() -> Path:
    return Path(str(files("fastapi_offline") / "static"))


def content_security_policy(html: str) -> str:
    """Only this origin, and the page's own inline scripts and styles by their sha256."""
    hashes: dict[str, list[str]] = {"script": [], "style": []}
    for kind, body in _INLINE.findall(html):
        digest = base64.b64encode(hashlib.sha256(body.encode()).digest()).decode()
        hashes[kind].append(f"'sha256-{digest}'")
    return "; ".join(
        (
            "default-src 'none'",
            " ".join(["script-src 'self'", *hashes["script"]]),
            # Swagger UI and ReDoc style their elements at run time (style attributes).
            "style-src 'self' 'unsafe-inline'",
            "img-src 'self' data:",
            "font-src 'self' data:",
            "connect-src 'self'",
            # ReDoc renders its parts in workers made from blobs.
            "worker-src 'self' blob:",
            "form-action 'self'",
            "base-uri 'none'",
            "frame-ancestors 'none'",
        )
    )


def _page(page: HTMLResponse) -> Callable[[], Awaitable[Response]]:
    """A page built once at start-up, answered with its policy."""
    body = bytes(page.body)
    headers = {"Content-Security-Policy": content_security_policy(body.decode()), "X-Frame-Options": "DENY"}

    async def serve() -> Response:
        return HTMLResponse(body, headers=headers)

    return serve


class _Assets(StaticFiles):
    async def get_response(self, path: str, scope: Scope) -> Response:
        response = await super().get_response(path, scope)
        if response.status_code in (200, 304):
            response.headers["Cache-Control"] = ASSETS_CACHE
        return response


def install(app: FastAPI) -> None:
    """Serves /docs, its OAuth2 redirect page, /redoc and their files; the app is created with docs_url=None."""
    openapi_url = app.openapi_url or "/openapi.json"
    redirect_url = app.swagger_ui_oauth2_redirect_url or "/docs/oauth2-redirect"
    swagger = get_swagger_ui_html(
        openapi_url=openapi_url,
        title=f"{app.title} - Swagger UI",
        oauth2_redirect_url=redirect_url,
        swagger_js_url=f"{ASSETS_PATH}/swagger-ui-bundle.js",
        swagger_css_url=f"{ASSETS_PATH}/swagger-ui.css",
        swagger_favicon_url=f"{ASSETS_PATH}/favicon.png",
        swagger_ui_parameters=app.swagger_ui_parameters,
    )
    redoc = get_redoc_html(
        openapi_url=openapi_url,
        title=f"{app.title} - ReDoc",
        redoc_js_url=f"{ASSETS_PATH}/redoc.standalone.js",
        redoc_favicon_url=f"{ASSETS_PATH}/favicon.png",
        with_google_fonts=False,
    )
    redirect = get_swagger_ui_oauth2_redirect_html()
    app.add_api_route("/docs", _page(swagger), methods=["GET"], include_in_schema=False)
    app.add_api_route(redirect_url, _page(redirect), methods=["GET"], include_in_schema=False)
    app.add_api_route("/redoc", _page(redoc), methods=["GET"], include_in_schema=False)
    app.mount(ASSETS_PATH, _Assets(directory=asset_directory()), name="docs-assets")
