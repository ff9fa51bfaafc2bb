"""Bounds every request body in size and in time, while it streams in, before any route sees it.

Uploads (POST to the paths given, multipart with a file) may be as large as the file limit plus
room for the multipart framing and form fields; any other body (JSON) at most `max_body_bytes`.
A declared Content-Length over the limit is refused with 413 before any of the body is read,
and a body that grows past it is refused at that moment, without reading the rest. A body that
has not fully arrived `read_timeout_seconds` after it started is refused with 408, so a client
dribbling bytes cannot hold a request open. At most the limit is ever held in memory. Requests
without a body (no Content-Length, no Transfer-Encoding) pass straight through."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from typing import Any

from facerestore_common.logging import request_id_var
from gateway_service.problems import PROBLEM_BASE, PROBLEM_MEDIA_TYPE

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

# Multipart boundaries, part headers and the small form fields that travel with the file.
FRAMING_ALLOWANCE = 64 * 1024


class _Refused(Exception):
    def __init__(self, status: int, reason: str, title: str, detail: str) -> None:
        super().__init__(detail)
        self.status, self.reason, self.title, self.detail = status, reason, title, detail


class BodyLimit:
    def __init__(
        self,
        app: ASGIApp,
        max_body_bytes: int,
        upload_paths: Mapping[str, int],
        read_timeout_seconds: float,
    ) -> None:
        """`upload_paths`: path -> the largest file a POST there may carry."""
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.upload_paths = dict(upload_paths)
        self.read_timeout_seconds = read_timeout_seconds

    def _limit(self, scope: Scope) -> tuple[int, str]:
        max_file = self.upload_paths.get(scope["path"]) if scope["method"] == "POST" else None
        if max_file is not None:
            return max_file + FRAMING_ALLOWANCE, f"the file is larger than {max_file} bytes"
        return self.max_body_bytes, f"the request body is larger than {self.max_body_bytes} bytes"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared: bytes | None = None
        chunked = False
        for name, value in scope["headers"]:
            if name == b"content-length":
                declared = value
            elif name == b"transfer-encoding":
                chunked = True
        if not chunked and (declared is None or declared == b"0"):
            await self.app(scope, receive, send)
            return
        limit, too_large = self._limit(scope)
        try:
            if declared is not None and (not declared.isdigit() or int(declared) > limit):
                raise _Refused(413, "payload-too-large", "Content Too Large", too_large)
            received = await self._read(receive, limit, too_large)
        except _Refused as refused:
            await self._refuse(scope, send, refused)
            return
        if received is None:
            return  # the client went away

        async def replay() -> Message:
            return received.pop(0) if received else await receive()

        await self.app(scope, replay, send)

    async def _read(self, receive: Receive, limit: int, too_large: str) -> list[Message] | None:
        received: list[Message] = []
        total = 0
        try:
            async with asyncio.timeout(self.read_timeout_seconds):
                while True:
                    message = await receive()
                    if message["type"] == "http.disconnect":
                        return None
                    total += len(message.get("body", b""))
                    if total > limit:
                        raise _Refused(413, "payload-too-large", "Content Too Large", too_large)
                    received.append(message)
                    if not message.get("more_body", False):
                        return received
        except TimeoutError:
            raise _Refused(
                408,
                "request-timeout",
                "Request Timeout",
                f"the request body did not arrive within {self.read_timeout_seconds:g} seconds",
            ) from None

    async def _refuse(self, scope: Scope, send: Send, refused: _Refused) -> None:
        body = json.dumps(
            {
                "type": PROBLEM_BASE + refused.reason,
                "title": refused.title,
                "status": refused.status,
                "detail": refused.detail,
                "instance": scope["path"],
                "request_id": request_id_var.get(),
            }
        ).encode()
        await send(
            {
                "type": "http.response.start",
                "status": refused.status,
                "headers": [
                    (b"content-type", PROBLEM_MEDIA_TYPE.encode()),
                    (b"content-length", str(len(body)).encode()),
                    # The rest of the body is never read, so the connection cannot be reused.
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})
