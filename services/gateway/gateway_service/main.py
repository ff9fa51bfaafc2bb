"""Start-up of the gateway."""

from __future__ import annotations

import uvicorn

from facerestore_common.logging import configure_logging
from facerestore_common.metrics_server import serve_metrics
from facerestore_common.telemetry import configure_tracing
from gateway_service.app import create_app
from gateway_service.server import server_options
from gateway_service.settings import Settings


def run() -> None:
    settings = Settings()
    configure_logging(settings.service_name, settings.log_level)
    configure_tracing(settings.service_name)
    serve_metrics(settings)
    uvicorn.run(
        create_app(settings),
        host=settings.http_host,
        port=settings.http_port,
        log_config=None,
        access_log=False,
        proxy_headers=False,
        **server_options(settings),
    )


if __name__ == "__main__":
    run()
