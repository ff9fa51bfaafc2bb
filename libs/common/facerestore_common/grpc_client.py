"""Outgoing gRPC calls: channels with sane limits and the metadata that carries
identity, request id and trace context to the next service.

Channels balance calls over every address their target resolves to (`round_robin`): in
Kubernetes a target such as `dns:///upload-grpc:50052` names a headless Service, whose name
resolves to one address per ready pod, so scaling a service out spreads its calls. Servers
close connections after GRPC_MAX_CONNECTION_AGE_SECONDS; the channel then resolves the name
again and finds pods that started since. Keepalive pings notice a dead pod between calls."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import grpc

from facerestore_common.grpc_client_telemetry import TelemetryChannel
from facerestore_common.logging import CLIENT_IP_METADATA_KEY, client_ip_var, request_id_var
from facerestore_common.settings import AuthClientSettings
from facerestore_common.telemetry import current_traceparent
from facerestore_common.tokens import JwksCache, TokenVerifier

ROUND_ROBIN_SERVICE_CONFIG = json.dumps({"loadBalancingConfig": [{"round_robin": {}}]})
# A ping after this long without traffic, also between calls; servers accept pings this often
# (grpc_server.MIN_CLIENT_PING_INTERVAL_MS) instead of answering them with "too many pings".
KEEPALIVE_TIME_MS = 30_000
KEEPALIVE_TIMEOUT_MS = 10_000
ChannelOption = tuple[str, Any]


def channel_options(max_message_bytes: int = 8 * 1024 * 1024) -> list[ChannelOption]:
    return [
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.service_config", ROUND_ROBIN_SERVICE_CONFIG),
        ("grpc.lb_policy_name", "round_robin"),
        ("grpc.keepalive_time_ms", KEEPALIVE_TIME_MS),
        ("grpc.keepalive_timeout_ms", KEEPALIVE_TIMEOUT_MS),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.max_pings_without_data", 0),
    ]


def insecure_channel(
    target: str, max_message_bytes: int = 8 * 1024 * 1024, extra_options: Sequence[ChannelOption] = ()
) -> grpc.aio.Channel:
    # Every unary call records a client span and client metrics (grpc_client_telemetry).
    return TelemetryChannel(
        grpc.aio.insecure_channel(target, options=[*channel_options(max_message_bytes), *extra_options])
    )


def call_metadata(bearer: str | None = None) -> tuple[tuple[str, str], ...]:
    metadata: list[tuple[str, str]] = []
    if bearer:
        metadata.append(("authorization", f"Bearer {bearer}"))
    request_id = request_id_var.get()
    if request_id:
        metadata.append(("x-request-id", request_id))
    client_ip = client_ip_var.get()
    if client_ip:
        metadata.append((CLIENT_IP_METADATA_KEY, client_ip))
    traceparent = current_traceparent()
    if traceparent:
        metadata.append(("traceparent", traceparent))
    return tuple(metadata)


def remote_jwks_fetcher(channel: grpc.aio.Channel, timeout_seconds: float = 3.0):  # type: ignore[no-untyped-def]
    """A JwksCache fetcher that asks the auth service over gRPC."""
    from facerestore.auth.v1 import auth_pb2, auth_pb2_grpc

    stub = auth_pb2_grpc.AuthServiceStub(channel)

    async def fetch() -> str:
        response = await stub.GetJwks(auth_pb2.GetJwksRequest(), timeout=timeout_seconds, metadata=call_metadata())
        return str(response.jwks_json)

    return fetch


def remote_token_verifier(settings: AuthClientSettings) -> tuple[TokenVerifier, grpc.aio.Channel]:
    """A verifier whose keys come from the auth service; the caller closes the channel."""
    channel = insecure_channel(settings.auth_grpc_target)
    verifier = TokenVerifier(
        JwksCache(remote_jwks_fetcher(channel), settings.jwks_cache_seconds),
        settings.jwt_issuer,
        settings.jwt_audience,
        settings.jwt_leeway_seconds,
    )
    return verifier, channel
