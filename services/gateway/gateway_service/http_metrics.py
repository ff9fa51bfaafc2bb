"""RED metrics of the public API, as a pure ASGI middleware around everything else: requests
by method, route and status, and their duration.

The route label is the route's template (`/v1/images/{image_id}`), never the raw path, and
paths that match no route share one label, so the number of series stays bounded whatever
clients ask for. Responses given before routing (a 413 for a body over the limit, a 429 for
the per-IP limit) are labelled with the route the path would have reached."""

from __future__ import annotations

import re
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from fastapi import FastAPI
from prometheus_client import Counter, Histogram
from starlette.routing import Route, compile_path

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

REQUESTS = Counter("gateway_http_requests_total", "HTTP requests by route and status", ["method", "route", "status"])
DURATION = Histogram("gateway_http_request_duration_seconds", "Time to answer an HTTP request", ["method", "route"])
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
UNMATCHED = "unmatched"


class RouteTemplates:
    """The template a request's path belongs to. Routing records the route it chose in the
    scope; for a request answered before routing, the path is matched against the API's
    templates (from its OpenAPI document) and the application's own routes (docs, schema)."""

    def __init__(self, app: FastAPI) -> None:
        self._app = app
        self._patterns: list[tuple[re.Pattern[str], str]] | None = None

    def _candidates(self) -> list[tuple[re.Pattern[str], str]]:
        if self._patterns is None:
            templates = [*self._app.openapi().get("paths", {})]
            templates += [route.path_format for route in self._app.routes if isinstance(route, Route)]
            self._patterns = [(compile_path(template)[0], template) for template in dict.fromkeys(templates)]
        return self._patterns

    def of(self, scope: Scope) -> str:
        template = getattr(scope.get("route"), "path_format", None)
        if isinstance(template, str) and template:
            return template
        path = scope.get("path", "")
        return next((template for pattern, template in self._candidates() if pattern.match(path)), UNMATCHED)


class HttpMetrics:
    def __init__(self, app: ASGIApp, templates: RouteTemplates) -> None:
        self.app = app
        self.templates = templates
        # The labelled series, looked up once each (labels() costs more than the count itself).
        self._series: dict[tuple[str, str, int], tuple[Any, Any]] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # unless a response starts: an exception is answered with 500 further out

        async def send_and_note_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_and_note_status)
        finally:
            method = scope["method"] if scope["method"] in METHODS else "OTHER"
            route = self.templates.of(scope)
            series = self._series.get((method, route, status))
            if series is None:
                series = REQUESTS.labels(method, route, str(status)), DURATION.labels(method, route)
                self._series[(method, route, status)] = series
            series[0].inc()
            series[1].observe(time.perf_counter() - started)
