"""Refuses an upload body larger than the limit while it streams in: a declared
Content-Length over the limit is refused before any of the body is read, and a body that
grows past it is refused at that moment, without reading the rest. At most the limit (plus
room for the multipart framing and form fields) is ever held in memory."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping
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


class UploadBodyLimit:
    def __init__(self, app: ASGIApp, path: str, max_file_bytes: int) -> None:
        self.app = app
        self.path = path
        self.max_file_bytes = max_file_bytes
        self.max_body_bytes = max_file_bytes + FRAMING_ALLOWANCE

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or scope["path"] != self.path:
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_body_bytes:
            await self._refuse(scope, send)
            return
        received: list[Message] = []
        total = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            total += len(message.get("body", b""))
            if total > self.max_body_bytes:
                await self._refuse(scope, send)
                return
            received.append(message)
            if not message.get("more_body", False):
                break

        async def replay() -> Message:
            return received.pop(0) if received else await receive()

        await self.app(scope, replay, send)

    async def _refuse(self, scope: Scope, send: Send) -> None:
        body = json.dumps(
            {
                "type": PROBLEM_BASE + "payload-too-large",
                "title": "Content Too Large",
                "status": 413,
                "detail": f"the file is larger than {self.max_file_bytes} bytes",
                "instance": scope["path"],
                "request_id": request_id_var.get(),
            }
        ).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", PROBLEM_MEDIA_TYPE.encode()),
                    (b"content-length", str(len(body)).encode()),
                    # The rest of the body is never read, so the connection cannot be reused.
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})
