"""The web client's static serving: the page with its own strict CSP, hashed assets cached for
good, nothing of it in the API's document, and no app at all without a build."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from gateway_service import webapp


def client(app: FastAPI) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gateway")


@pytest.fixture
def built(tmp_path: Path) -> Path:
    (tmp_path / "assets").mkdir()
    (tmp_path / "index.html").write_text('<!doctype html><script type="module" src="/assets/index-abc.js"></script>')
    (tmp_path / "assets" / "index-abc.js").write_text("console.log('app')")
    (tmp_path / "favicon.svg").write_text("<svg xmlns='http://www.w3.org/2000/svg'/>")
    return tmp_path


async def test_the_page_carries_a_strict_content_security_policy(built: Path) -> None:
    app = FastAPI()
    webapp.install(app, str(built))
    async with client(app) as http:
        page = await http.get("/")

    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert "/assets/index-abc.js" in page.text
    policy = dict(part.strip().split(" ", 1) for part in page.headers["content-security-policy"].split(";"))
    assert policy["default-src"] == "'none'"
    assert policy["script-src"] == "'self'" and policy["style-src"] == "'self'"
    assert policy["connect-src"] == "'self'" and policy["frame-ancestors"] == "'none'"
    assert "unsafe" not in page.headers["content-security-policy"]
    assert page.headers["cache-control"] == "no-cache"
    assert page.headers["x-frame-options"] == "DENY"


async def test_hashed_assets_are_cached_for_good_and_unknown_ones_are_404(built: Path) -> None:
    app = FastAPI()
    webapp.install(app, str(built))
    async with client(app) as http:
        asset = await http.get("/assets/index-abc.js")
        assert asset.status_code == 200 and asset.text == "console.log('app')"
        assert asset.headers["cache-control"] == "public, max-age=31536000, immutable"
        assert asset.headers["x-content-type-options"] == "nosniff"
        assert (await http.get("/favicon.svg")).status_code == 200
        assert (await http.get("/assets/missing.js")).status_code == 404
        assert (await http.get("/assets/%2e%2e/index.html")).status_code == 404
    assert app.openapi()["paths"] == {}


async def test_without_a_build_the_gateway_serves_no_page(tmp_path: Path) -> None:
    app = FastAPI()
    webapp.install(app, str(tmp_path / "missing"))
    webapp.install(app, "")
    async with client(app) as http:
        assert (await http.get("/")).status_code == 404
