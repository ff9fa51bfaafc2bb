"""OpenTelemetry tracing set-up and W3C trace-context carriers for events and gRPC.

Spans go to an OTLP collector when the standard variables name one: OTEL_EXPORTER_OTLP_ENDPOINT
(or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT), with OTEL_EXPORTER_OTLP_[TRACES_]PROTOCOL `http/protobuf`
(the specification's default) or `grpc`; headers, certificates, compression and timeouts come
from their OTEL_EXPORTER_OTLP_* variables, read by the exporter itself. OTEL_TRACES_EXPORTER=none
or OTEL_SDK_DISABLED=true turn export off; OTEL_TRACES_SAMPLER, OTEL_BSP_* (batching) and
OTEL_RESOURCE_ATTRIBUTES apply as the SDK defines them. Without an endpoint spans are still
made, so that every log line carries its trace id and span id and the trace context travels on
(W3C traceparent, in gRPC metadata and events), but they are not recorded: recording a span costs
three times as much as making its context, a cost for nothing when no exporter takes it. An
OTEL_TRACES_SAMPLER set in the environment is used as given, with or without an endpoint."""

from __future__ import annotations

import os
from collections.abc import Mapping

from opentelemetry import context, trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from facerestore_common.logging import get_logger

log = get_logger(__name__)

PROTOCOLS = ("http/protobuf", "grpc")


def _setting(env: Mapping[str, str], name: str) -> str:
    """OTEL_EXPORTER_OTLP_TRACES_<name>, else OTEL_EXPORTER_OTLP_<name>."""
    return env.get(f"OTEL_EXPORTER_OTLP_TRACES_{name}") or env.get(f"OTEL_EXPORTER_OTLP_{name}", "")


def otlp_exporter(env: Mapping[str, str] | None = None) -> SpanExporter | None:
    """The OTLP span exporter the environment asks for, or None when it asks for none."""
    env = os.environ if env is None else env
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return None
    if env.get("OTEL_TRACES_EXPORTER", "otlp").strip().lower() in ("none", ""):
        return None
    if not _setting(env, "ENDPOINT"):
        return None
    protocol = _setting(env, "PROTOCOL") or "http/protobuf"
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter

        return GrpcExporter()
    if protocol == "http/protobuf":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter

        return HttpExporter()
    raise ValueError(
        f"OTEL_EXPORTER_OTLP_PROTOCOL (or OTEL_EXPORTER_OTLP_TRACES_PROTOCOL) must be one of "
        f"{', '.join(PROTOCOLS)}, got {protocol!r}"
    )


def tracer_provider(service: str, env: Mapping[str, str] | None = None) -> TracerProvider:
    """The provider the environment asks for: exporting by OTLP when it names a collector; else
    making spans' contexts without recording them, unless OTEL_TRACES_SAMPLER says otherwise."""
    env = os.environ if env is None else env
    exporter = otlp_exporter(env)
    # None: the SDK reads OTEL_TRACES_SAMPLER itself (default: parent-based, always on).
    sampler = ALWAYS_OFF if exporter is None and not env.get("OTEL_TRACES_SAMPLER") else None
    # Resource.create adds OTEL_RESOURCE_ATTRIBUTES; OTEL_SERVICE_NAME, when set, wins over ours.
    provider = TracerProvider(
        sampler=sampler, resource=Resource.create({"service.name": env.get("OTEL_SERVICE_NAME", service)})
    )
    if exporter is not None:
        # Flushed by the provider's own shutdown when the process exits.
        provider.add_span_processor(BatchSpanProcessor(exporter))
        log.info("traces_exported", endpoint=_setting(env, "ENDPOINT"), exporter=type(exporter).__module__)
    return provider


def configure_tracing(service: str) -> None:
    if not isinstance(trace.get_tracer_provider(), TracerProvider):
        trace.set_tracer_provider(tracer_provider(service))


# Only a W3C traceparent travels between our services (in gRPC metadata and events): read and
# written by the W3C propagator itself, not the configured composite one (which would also look
# for baggage on every call), and without a context when there is none.
_TRACE_CONTEXT = TraceContextTextMapPropagator()


def traceparent_of(span: trace.Span) -> str:
    """The W3C traceparent naming `span` as the parent, or "" when it has no valid context."""
    span_context = span.get_span_context()
    if not span_context.is_valid:
        return ""
    return f"00-{span_context.trace_id:032x}-{span_context.span_id:016x}-{span_context.trace_flags:02x}"


def current_traceparent() -> str:
    return traceparent_of(trace.get_current_span())


def context_from_traceparent(traceparent: str) -> context.Context:
    if not traceparent:
        return context.Context()
    return _TRACE_CONTEXT.extract({"traceparent": traceparent})


def current_trace_id() -> str:
    """The current span's trace id as 32 hex digits, or "" outside a span."""
    span_context = trace.get_current_span().get_span_context()
    return format(span_context.trace_id, "032x") if span_context.is_valid else ""
