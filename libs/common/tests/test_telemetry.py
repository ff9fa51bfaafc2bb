"""Traces and client metrics: the OTLP exporter is chosen by the standard OTEL_* variables, and
every outgoing gRPC call (through the shared channel) makes a client span whose context the
server continues, and counts itself by method and status code."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator

import grpc
import pytest
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from prometheus_client import REGISTRY

from facerestore.auth.v1 import auth_pb2, auth_pb2_grpc
from facerestore_common.errors import NotFound
from facerestore_common.grpc_client import call_metadata, insecure_channel
from facerestore_common.grpc_server import GrpcServer
from facerestore_common.telemetry import context_from_traceparent, current_traceparent, otlp_exporter, tracer_provider


def test_the_exporter_follows_the_standard_variables() -> None:
    assert otlp_exporter({}) is None
    assert isinstance(otlp_exporter({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}), HttpExporter)
    assert isinstance(
        otlp_exporter({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4317", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}),
        GrpcExporter,
    )
    traces_only = {
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4317",
        "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "grpc",
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
    }
    assert isinstance(otlp_exporter(traces_only), GrpcExporter)
    endpoint = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}
    assert otlp_exporter({**endpoint, "OTEL_TRACES_EXPORTER": "none"}) is None
    assert otlp_exporter({**endpoint, "OTEL_SDK_DISABLED": "true"}) is None
    with pytest.raises(ValueError, match="OTEL_EXPORTER_OTLP_PROTOCOL"):
        otlp_exporter({**endpoint, "OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"})


@pytest.fixture(scope="module")
def spans() -> InMemorySpanExporter:
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        provider = TracerProvider()
        trace.set_tracer_provider(provider)
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return exporter


class Recorder(auth_pb2_grpc.AuthServiceServicer):
    def __init__(self) -> None:
        self.traceparents: list[str] = []

    async def GetJwks(  # noqa: N802 - the RPC's name from proto/
        self, request: auth_pb2.GetJwksRequest, context: grpc.aio.ServicerContext
    ) -> auth_pb2.GetJwksResponse:
        metadata = dict(context.invocation_metadata() or ())
        self.traceparents.append(str(metadata.get("traceparent", "")))
        return auth_pb2.GetJwksResponse(jwks_json="{}")

    async def GetMe(  # noqa: N802 - the RPC's name from proto/
        self, request: auth_pb2.GetMeRequest, context: grpc.aio.ServicerContext
    ) -> auth_pb2.GetMeResponse:
        raise NotFound("nobody here")


@pytest.fixture
async def server() -> AsyncIterator[tuple[str, Recorder]]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    grpc_server = GrpcServer(["facerestore.auth.v1.AuthService"], "127.0.0.1", port, 1024 * 1024, [])
    recorder = Recorder()
    auth_pb2_grpc.add_AuthServiceServicer_to_server(recorder, grpc_server.server)
    await grpc_server.start()
    yield f"127.0.0.1:{port}", recorder
    await grpc_server.stop(0)


def handled(method: str, code: str) -> float:
    return REGISTRY.get_sample_value("grpc_client_handled_total", {"method": method, "code": code}) or 0.0


async def test_a_call_is_a_client_span_the_server_continues_and_is_counted(
    spans: InMemorySpanExporter, server: tuple[str, Recorder]
) -> None:
    address, recorder = server
    method = "/facerestore.auth.v1.AuthService/GetJwks"
    refused_method = "/facerestore.auth.v1.AuthService/GetMe"
    before_ok, before_refused = handled(method, "OK"), handled(refused_method, "NOT_FOUND")
    channel = insecure_channel(address)
    stub = auth_pb2_grpc.AuthServiceStub(channel)
    tracer = trace.get_tracer("test")
    try:
        with tracer.start_as_current_span("caller") as caller:
            # The caller's own context is in the metadata; the client span's replaces it.
            await stub.GetJwks(auth_pb2.GetJwksRequest(), metadata=call_metadata(), timeout=5)
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.GetMe(auth_pb2.GetMeRequest(), timeout=5)
    finally:
        await channel.close()
    assert refused.value.code() is grpc.StatusCode.NOT_FOUND

    assert handled(method, "OK") == before_ok + 1
    assert handled(refused_method, "NOT_FOUND") == before_refused + 1
    client = next(span for span in spans.get_finished_spans() if span.name == method and span.kind is SpanKind.CLIENT)
    assert client.parent is not None and client.parent.span_id == caller.get_span_context().span_id
    received = trace.get_current_span(context_from_traceparent(recorder.traceparents[-1])).get_span_context()
    assert received.trace_id == caller.get_span_context().trace_id
    assert received.span_id == client.context.span_id
    server_span = next(
        span for span in spans.get_finished_spans() if span.name == method and span.kind is SpanKind.SERVER
    )
    assert server_span.parent is not None and server_span.parent.span_id == client.context.span_id


def test_without_a_collector_spans_carry_the_trace_on_without_being_recorded() -> None:
    tracer = tracer_provider("svc", {}).get_tracer(__name__)
    caller = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    span = tracer.start_span("GET /v1/images", context=context_from_traceparent(caller))
    assert not span.is_recording()
    made = span.get_span_context()
    assert made.is_valid
    assert format(made.trace_id, "032x") == "0af7651916cd43dd8448eb211c80319c"
    assert format(made.span_id, "016x") != "b7ad6b7169203331"
    with trace.use_span(span, end_on_exit=True):
        assert current_traceparent().split("-")[1] == "0af7651916cd43dd8448eb211c80319c"
    assert tracer.start_span("new").get_span_context().is_valid


def test_spans_are_recorded_when_a_collector_takes_them_or_a_sampler_is_asked_for() -> None:
    exported = tracer_provider("svc", {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"})
    assert exported.get_tracer(__name__).start_span("x").is_recording()
    sampled = tracer_provider("svc", {"OTEL_TRACES_SAMPLER": "always_on"})
    assert sampled.get_tracer(__name__).start_span("x").is_recording()
