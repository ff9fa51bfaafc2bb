"""Structured JSON logs, one line per event, with request id and trace id."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable
from contextvars import ContextVar
from typing import Any

import orjson
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


# Datetimes and dataclasses go to _json_default (their repr), as json.dumps wrote them, not in
# orjson's own forms: the lines say what they said before.
_ORJSON_OPTION = orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS


def _json_default(value: Any) -> Any:
    """A value JSON has no form for, as json.dumps with structlog's fallback wrote it: a float
    subclass (numpy.float64) as its number, anything else by its __structlog__ or its repr."""
    if isinstance(value, float):
        return float(value)
    try:
        return value.__structlog__()
    except AttributeError:
        return repr(value)


def _json_bytes(event: dict[str, Any], *, default: Any = _json_default) -> bytes:
    """One event as compact JSON. A value orjson refuses outright (an int beyond 64 bits, a key
    that is not a string, a lone surrogate) costs that one line the standard library's slower
    rendering, never the log call."""
    try:
        return orjson.dumps(event, default=default, option=_ORJSON_OPTION)
    except TypeError:  # orjson.JSONEncodeError
        return json.dumps(event, default=default, separators=(",", ":")).encode()


def _json_text(event: dict[str, Any], *, default: Any = _json_default) -> str:
    return _json_bytes(event, default=default).decode()


class _WriterHandler(logging.Handler):
    """Other libraries' records, rendered by the formatter, written by the writer of our own
    events: one lock for both, so that a line of one is never split by a line of the other."""

    def __init__(self, writer: structlog.BytesLogger | structlog.WriteLogger) -> None:
        super().__init__()
        self._write_line: Callable[[str], None]
        if isinstance(writer, structlog.BytesLogger):
            self._write_line = lambda line: writer.msg(line.encode())
        else:
            self._write_line = writer.msg

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self._write_line(self.format(record))
        except RecursionError:
            raise
        except Exception:
            self.handleError(record)


def configure_logging(service: str, level: str = "INFO") -> None:
    """Our own events are rendered and written by structlog directly, without passing through
    the standard library's logging (a LogRecord, handlers and a formatter cost several times the
    rendering itself, and the gateway and services log a line per request); other libraries'
    log records go through a standard handler that renders them the same way.

    Both go to the sys.stdout of this call (a later replacement, such as pytest's capture, is not
    followed) through one writer: a line per write() under its lock, flushed. The lock matters:
    with PYTHONUNBUFFERED=1, as in the images, stdout's buffer is the bare file, and two threads'
    writes of more than 4 KiB into a pipe can interleave. The writer takes bytes straight into
    stdout's buffer, or text when stdout has none (io.StringIO)."""
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _add_context,
        structlog.processors.format_exc_info,
    ]
    threshold = logging.getLevelName(level.upper())
    stdout = sys.stdout
    stdout_bytes = getattr(stdout, "buffer", None)
    writer: structlog.BytesLogger | structlog.WriteLogger
    if stdout_bytes is not None:
        writer = structlog.BytesLogger(stdout_bytes)
        render = structlog.processors.JSONRenderer(serializer=_json_bytes, default=_json_default)
    else:
        writer = structlog.WriteLogger(stdout)
        render = structlog.processors.JSONRenderer(serializer=_json_text, default=_json_default)
    structlog.configure(
        processors=[*shared, _add_service(service), render],
        logger_factory=lambda *_: writer,
        wrapper_class=structlog.make_filtering_bound_logger(threshold if isinstance(threshold, int) else logging.INFO),
        cache_logger_on_first_use=True,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[
            _add_service(service),
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.JSONRenderer(serializer=_json_text, default=_json_default),
        ],
    )
    handler = _WriterHandler(writer)
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
