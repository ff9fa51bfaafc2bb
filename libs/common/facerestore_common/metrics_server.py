"""Prometheus `/metrics`, and HTTP probes where a service has them (the inference worker's
`/healthz` and `/readyz`), on a port of the service's own, never on its public API.

It answers from its own threads, so a probe still answers, and can say so, while the
service's event loop is stuck."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Callable, Iterable, Mapping
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import REGISTRY, CollectorRegistry, make_wsgi_app

from facerestore_common.logging import get_logger
from facerestore_common.settings import ServiceSettings

log = get_logger(__name__)

# (healthy, details for the JSON body)
ProbeResult = tuple[bool, Mapping[str, object]]
Probe = Callable[[], ProbeResult]
StartResponse = Callable[..., Any]


class _ThreadingServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True
    allow_reuse_address = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """Scrapes and probes every few seconds are not worth a log line."""


def _server_class(host: str) -> type[_ThreadingServer]:
    family = socket.getaddrinfo(host or None, 0, type=socket.SOCK_STREAM)[0][0]

    class Server(_ThreadingServer):
        address_family = family

    return Server


def _json(start_response: StartResponse, status: str, body: Mapping[str, object]) -> Iterable[bytes]:
    payload = json.dumps(body).encode()
    start_response(status, [("Content-Type", "application/json"), ("Content-Length", str(len(payload)))])
    return [payload]


def wsgi_app(probes: Mapping[str, Probe], registry: CollectorRegistry = REGISTRY) -> Callable[..., Iterable[bytes]]:
    metrics = make_wsgi_app(registry)

    def app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "/")
        probe = probes.get(path)
        if probe is not None:
            try:
                healthy, details = probe()
            except Exception as error:
                log.error("probe_failed", path=path, exc_info=True)
                healthy, details = False, {"error": type(error).__name__}
            status = "200 OK" if healthy else "503 Service Unavailable"
            return _json(start_response, status, {"status": "ok" if healthy else "failing", **details})
        if path == "/metrics":
            return metrics(environ, start_response)  # type: ignore[no-any-return]
        return _json(start_response, "404 Not Found", {"status": "not-found", "paths": ["/metrics", *probes]})

    return app


class MetricsServer:
    def __init__(self, host: str, port: int, probes: Mapping[str, Probe] | None = None) -> None:
        self._server = make_server(
            host, port, wsgi_app(dict(probes or {})), server_class=_server_class(host), handler_class=_QuietHandler
        )
        self.address = f"{host}:{self._server.server_port}"
        self._thread = threading.Thread(target=self._server.serve_forever, name="metrics-server", daemon=True)

    def start(self) -> MetricsServer:
        self._thread.start()
        log.info("metrics_serving", address=self.address)
        return self

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


def serve_metrics(settings: ServiceSettings, probes: Mapping[str, Probe] | None = None) -> MetricsServer | None:
    """Start the endpoint from METRICS_HOST/METRICS_PORT; None when METRICS_PORT=0 turns it off."""
    if not settings.metrics_port:
        return None
    return MetricsServer(settings.metrics_host, settings.metrics_port, probes).start()
