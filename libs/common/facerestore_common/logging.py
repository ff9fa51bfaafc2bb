"""Structured JSON logs, one line per event, with request id and trace id."""

from __future__ import annotations

import logging
import sys
from contextvars import ContextVar
from typing import Any

import structlog
from opentelemetry import trace

request_id_var: ContextVar[str] = ContextVar("request_id", default="")
# The end client's address as the gateway determined it, passed to services in gRPC metadata.
client_ip_var: ContextVar[str] = ContextVar("client_ip", default="")
CLIENT_IP_METADATA_KEY = "x-client-ip"


def _add_context(_: Any, __: str, event: dict[str, Any]) -> dict[str, Any]:
    request_id = request_id_var.get()
    if request_id:
        event.setdefault("request_id", request_id)
    span_context = trace.get_current_span().get_span_context()
    if span_context.is_valid:
        event.setdefault("trace_id", format(span_context.trace_id, "032x"))
        event.setdefault("span_id", format(span_context.span_id, "016x"))
    return event


def _add_service(service: str) -> Any:
    def add_service(_: Any, __: str, event: dict[str, Any]) -> dict[str, Any]:
        event["service"] = service
        return event

    return add_service


def configure_logging(service: str, level: str = "INFO") -> None:
    """Our own events are rendered and written by structlog directly, without passing through
    the standard library's logging (a LogRecord, handlers and a formatter cost several times the
    rendering itself, and the gateway and services log a line per request); other libraries'
    log records go through a standard handler that renders them the same way."""
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _add_context,
        structlog.processors.format_exc_info,
    ]
    threshold = logging.getLevelName(level.upper())
    structlog.configure(
        processors=[*shared, _add_service(service), structlog.processors.JSONRenderer()],
        logger_factory=structlog.WriteLoggerFactory(sys.stdout),
        wrapper_class=structlog.make_filtering_bound_logger(threshold if isinstance(threshold, int) else logging.INFO),
        cache_logger_on_first_use=True,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[
            _add_service(service),
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.JSONRenderer(),
        ],
    )
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("aiormq", "aio_pika", "pymongo", "urllib3", "httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def get_logger(name: str) -> Any:
    return structlog.get_logger(name)


def mask_phone(phone: str) -> str:
    """Keep country code and last two digits: enough to correlate, not to identify."""
    if len(phone) <= 5:
        return "***"
    return phone[:3] + "*" * (len(phone) - 5) + phone[-2:]
