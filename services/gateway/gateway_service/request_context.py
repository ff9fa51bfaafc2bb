"""Around every request, as a pure ASGI middleware: its id, the client's address, its trace span,
the per-IP limit (with the ended-session check of its token and its user's library generation in
the same Redis round trip), answers kept by the page cache, the RateLimit header fields of the
limit that answered, the security headers, and one log line.

A client's X-Request-ID is kept only when it is 1-64 of [A-Za-z0-9._-]; otherwise one is made,
so that nothing a client chooses reaches logs or answers unchecked.

The span is the request's HTTP server span (continuing the caller's trace when a `traceparent`
header names one), made here rather than by FastAPI's own telemetry: that one costs about as much
per request as the rest of this middleware, probes included. Probes get no span, no log line and
no limit."""

from __future__ import annotations

import functools
import os
import re
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from opentelemetry import propagate, trace
from opentelemetry.trace import SpanKind, Status, StatusCode
from starlette.requests import Request

from facerestore_common.library_generation import GENERATION_TTL_SECONDS, generation_key
from facerestore_common.logging import client_ip_var, get_logger, request_id_var
from facerestore_common.tokens import Principal, TokenVerifier
from gateway_service import problems
from gateway_service.client_ip import Network, client_ip
from gateway_service.page_cache import PAGE_TO_KEEP, PageCache
from gateway_service.problems import Problem
from gateway_service.rate_limits import Limit, RateLimiter, Verdict
from gateway_service.sessions import PrefetchedRevocations, unverified_session_id

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
Headers = list[tuple[bytes, bytes]]

log = get_logger(__name__)
tracer = trace.get_tracer(__name__)

REQUEST_ID = re.compile(rb"[A-Za-z0-9._-]{1,64}")
PROBE_PATHS = frozenset({"/healthz", "/readyz"})
HSTS = (b"strict-transport-security", b"max-age=31536000; includeSubDomains")
NOSNIFF = (b"x-content-type-options", b"nosniff")
NO_STORE = (b"cache-control", b"no-store")
# Where a route's own limit (the upload quota, the search limit) leaves its verdict.
ROUTE_VERDICT = "rate_limit_verdict"
JSON_TYPE = (b"content-type", b"application/json")


class RequestContext:
    def __init__(
        self,
        app: ASGIApp,
        limiter: RateLimiter,
        ip_limit: Limit,
        trusted_proxies: list[Network],
        sessions: PrefetchedRevocations,
        https: bool,
        pages: PageCache,
        key_prefix: str,
    ) -> None:
        self.app = app
        self.limiter = limiter
        self.ip_limit = ip_limit
        self.sessions = sessions
        self.https = https
        self.pages = pages
        self.key_prefix = key_prefix

        # Clients keep their address (and their proxies theirs) from request to request.
        @functools.lru_cache(maxsize=4096)
        def address(peer: str, forwarded_for: str | None) -> str:
            return client_ip(peer, forwarded_for, trusted_proxies)

        self._address = address

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        incoming_id = forwarded_for = authorization = traceparent = None
        for name, value in scope["headers"]:
            if name == b"x-request-id":
                incoming_id = value
            elif name == b"x-forwarded-for":
                forwarded_for = value
            elif name == b"authorization":
                authorization = value
            elif name == b"traceparent":
                traceparent = value
        request_id = incoming_id.decode() if incoming_id and REQUEST_ID.fullmatch(incoming_id) else os.urandom(16).hex()
        request_id_var.set(request_id)
        peer = scope["client"][0] if scope.get("client") else ""
        address = self._address(peer, forwarded_for.decode("latin-1") if forwarded_for else None)
        client_ip_var.set(address)
        path: str = scope["path"]
        answered = {"status": 500}
        ip_verdict: Verdict | None = None

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                answered["status"] = message["status"]
                message["headers"] = self._headers(scope, path, message, ip_verdict, request_id)
            await send(message)

        if path in PROBE_PATHS:
            await self.app(scope, receive, send_with_headers)
            return
        method: str = scope["method"]
        parent = propagate.extract({"traceparent": traceparent.decode("latin-1")}) if traceparent else None
        span = tracer.start_span(
            method, context=parent, kind=SpanKind.SERVER, attributes={"http.request.method": method, "url.path": path}
        )
        # use_span over start_as_current_span: one context manager layer fewer per request.
        with trace.use_span(span, end_on_exit=True):
            kept = None
            try:
                remembered = self._remembered(scope, authorization) if authorization else None
                if remembered is not None:
                    session_id: str | None = remembered[1].session_id
                else:
                    session_id = unverified_session_id(authorization) if authorization else None
                session_key = self.sessions.key(session_id) if session_id else None
                page_key = user_id = None
                if remembered is not None and method == "GET" and self.pages.enabled:
                    # A GET with a token this gateway already verified may be answered from memory.
                    page_key = (remembered[0], path, scope.get("query_string", b""))
                    user_id = remembered[1].user_id
                ip_verdict, ended, generation = await self.limiter.hit_and_check(
                    self.ip_limit,
                    address,
                    session_key,
                    generation_key(self.key_prefix, user_id) if user_id is not None else None,
                    GENERATION_TTL_SECONDS,
                )
                if session_id is not None and ended is not None:
                    self.sessions.remember(session_id, ended)
                # ended and generation are None when Redis did not answer: nothing is served from memory.
                if page_key is not None and ended is False and generation is not None:
                    kept = self.pages.lookup(page_key, generation)
                    if kept is None:
                        scope.setdefault("state", {})[PAGE_TO_KEEP] = (page_key, generation)
            except Problem as refused:
                await problems.problem_response(refused, Request(scope))(scope, receive, send_with_headers)
            else:
                if kept is not None:
                    scope["route"] = kept.route
                    await send_with_headers(
                        {
                            "type": "http.response.start",
                            "status": 200,
                            "headers": [JSON_TYPE, (b"content-length", str(len(kept.body)).encode())],
                        }
                    )
                    await send_with_headers({"type": "http.response.body", "body": kept.body})
                else:
                    await self.app(scope, receive, send_with_headers)
            finally:
                status = answered["status"]
                route = getattr(scope.get("route"), "path_format", None)
                if route:
                    span.update_name(f"{method} {route}")
                    span.set_attribute("http.route", route)
                span.set_attribute("http.response.status_code", status)
                if status >= 500:
                    span.set_status(Status(StatusCode.ERROR))
                log.info(
                    "http_request",
                    method=method,
                    path=path,
                    status=status,
                    duration_ms=round((time.perf_counter() - started) * 1000, 1),
                    **({"page_cache": "hit"} if kept is not None else {}),
                )

    @staticmethod
    def _remembered(scope: Scope, authorization: bytes) -> tuple[str, Principal] | None:
        """A bearer token the verifier has already checked, and its principal (no I/O)."""
        scheme, _, token = authorization.partition(b" ")
        verifier: TokenVerifier | None = getattr(scope["app"].state, "verifier", None)
        if scheme.lower() != b"bearer" or verifier is None:
            return None
        text = token.strip().decode("latin-1")
        principal = verifier.remembered(text)
        return (text, principal) if principal is not None else None

    def _headers(self, scope: Scope, path: str, start: Message, ip_verdict: Verdict | None, request_id: str) -> Headers:
        headers: Headers = list(start.get("headers", []))
        present = {name.lower() for name, _ in headers}
        # A route's own, stricter limit (the upload quota) is the one the client sees; an answer
        # that already names its limit (a 429 from this or another service) keeps its own.
        verdict = scope.get("state", {}).get(ROUTE_VERDICT) or ip_verdict
        if verdict is not None and b"ratelimit-limit" not in present and start["status"] != 429:
            headers += [(name.lower().encode(), value.encode()) for name, value in verdict.headers().items()]
        if b"x-content-type-options" not in present:
            headers.append(NOSNIFF)
        # API answers are personal (tokens, photos' links): never stored, unless a route says otherwise.
        if b"cache-control" not in present and path.startswith("/v1/"):
            headers.append(NO_STORE)
        if self.https:
            headers.append(HSTS)
        # A problem answer already names it (the same id, read from the context).
        if b"x-request-id" not in present:
            headers.append((b"x-request-id", request_id.encode()))
        return headers
