"""How uvicorn serves the gateway: the uvloop event loop and the httptools parser (the fastest
pair uvicorn has), no `server` banner, and a bound on the time a client may take to send a
request's headers.

uvicorn bounds the idle time between requests (`timeout_keep_alive`) but not the time to send
headers: a client that sends one byte a second, or nothing at all after connecting, would hold
a connection for as long as it likes. The protocol below gives every request, from the moment
the connection opens or its first byte arrives, HEADER_READ_TIMEOUT_SECONDS to finish its
headers, then answers 408 and closes. (Bodies are bounded by body_limit.BodyLimit.)"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from gateway_service.settings import Settings

_REQUEST_TIMEOUT = (
    b"HTTP/1.1 408 Request Timeout\r\ncontent-type: text/plain\r\ncontent-length: 31\r\n"
    b"connection: close\r\n\r\nrequest headers were too slow\r\n"
)


class HeaderDeadlineProtocol(HttpToolsProtocol):
    header_timeout_seconds = 10.0
    _header_deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._start_header_deadline()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_header_deadline()
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._start_header_deadline()

    def on_headers_complete(self) -> None:
        self._stop_header_deadline()
        super().on_headers_complete()

    def _start_header_deadline(self) -> None:
        if self._header_deadline is None:
            self._header_deadline = self.loop.call_later(self.header_timeout_seconds, self._headers_too_slow)

    def _stop_header_deadline(self) -> None:
        if self._header_deadline is not None:
            self._header_deadline.cancel()
            self._header_deadline = None

    def _headers_too_slow(self) -> None:
        self._header_deadline = None
        if not self.transport.is_closing():
            self.transport.write(_REQUEST_TIMEOUT)
            self.transport.close()


def server_options(settings: Settings) -> dict[str, Any]:
    """uvicorn.run's options for the gateway (and for the bare app it is benchmarked against)."""
    deadline = {"header_timeout_seconds": settings.header_read_timeout_seconds}
    protocol = type("GatewayHttpProtocol", (HeaderDeadlineProtocol,), deadline)
    return {
        "loop": "uvloop",
        "http": protocol,
        "server_header": False,
        "timeout_keep_alive": 5,
        "timeout_graceful_shutdown": 10,
    }
