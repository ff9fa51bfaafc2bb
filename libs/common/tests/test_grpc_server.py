# ruff: noqa: N802 - servicer methods carry the RPC names from proto/.
"""The shared gRPC bootstrap on a real server and a real channel: access policy,
error mapping to status codes, and the health service.

A small AuthService servicer stands in for a real service:
  GetJwks      PUBLIC  returns the key set
  GetMe        USER    (not in the policy: USER is the default) echoes the principal
  CountUsers   ADMIN   returns fixed counts
  ListUsers    USER    raises NotFound
  RefreshToken PUBLIC  raises an unexpected exception
"""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Callable

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from facerestore.auth.v1 import auth_pb2, auth_pb2_grpc
from facerestore_common.errors import REASON_METADATA_KEY, NotFound
from facerestore_common.grpc_server import Access, AuthInterceptor, GrpcServer
from facerestore_common.tokens import TokenVerifier, require_principal

SERVICE = "facerestore.auth.v1.AuthService"
POLICY = {"GetJwks": Access.PUBLIC, "RefreshToken": Access.PUBLIC, "CountUsers": Access.ADMIN}
SECRET_DETAIL = "db password is hunter2"


class TinyAuthService(auth_pb2_grpc.AuthServiceServicer):
    def __init__(self, jwks_json: str) -> None:
        self.jwks_json = jwks_json

    async def GetJwks(
        self, request: auth_pb2.GetJwksRequest, context: grpc.aio.ServicerContext
    ) -> auth_pb2.GetJwksResponse:
        return auth_pb2.GetJwksResponse(jwks_json=self.jwks_json)

    async def GetMe(self, request: auth_pb2.GetMeRequest, context: grpc.aio.ServicerContext) -> auth_pb2.GetMeResponse:
        principal = require_principal()
        return auth_pb2.GetMeResponse(user=auth_pb2.User(id=principal.user_id, role=principal.role))

    async def CountUsers(
        self, request: auth_pb2.CountUsersRequest, context: grpc.aio.ServicerContext
    ) -> auth_pb2.CountUsersResponse:
        return auth_pb2.CountUsersResponse(users=12, admins=2)

    async def ListUsers(
        self, request: auth_pb2.ListUsersRequest, context: grpc.aio.ServicerContext
    ) -> auth_pb2.ListUsersResponse:
        raise NotFound("no page at that cursor", reason="cursor-not-found")

    async def RefreshToken(
        self, request: auth_pb2.RefreshTokenRequest, context: grpc.aio.ServicerContext
    ) -> auth_pb2.RefreshTokenResponse:
        raise RuntimeError(SECRET_DETAIL)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
async def channel(jwks_json: str, make_verifier: Callable[..., TokenVerifier]) -> AsyncIterator[grpc.aio.Channel]:
    async def fetch() -> str:
        return jwks_json

    server = GrpcServer(
        [SERVICE], "127.0.0.1", _free_port(), 4 * 1024 * 1024, [AuthInterceptor(make_verifier(fetch), POLICY)]
    )
    auth_pb2_grpc.add_AuthServiceServicer_to_server(TinyAuthService(jwks_json), server.server)
    # What GrpcServer.run() does before it waits for a signal.
    await server.server.start()
    for name in ["", SERVICE]:
        await server.health.set(name, health_pb2.HealthCheckResponse.SERVING)
    async with grpc.aio.insecure_channel(server.address) as client_channel:
        yield client_channel
    await server.server.stop(grace=None)


@pytest.fixture
def stub(channel: grpc.aio.Channel) -> auth_pb2_grpc.AuthServiceStub:
    return auth_pb2_grpc.AuthServiceStub(channel)


def bearer(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


async def refusal(call: grpc.aio.UnaryUnaryCall) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    return caught.value


def reason_of(error: grpc.aio.AioRpcError) -> str | None:
    return dict(error.trailing_metadata() or ()).get(REASON_METADATA_KEY)


async def test_public_method_answers_without_a_token(stub: auth_pb2_grpc.AuthServiceStub, jwks_json: str) -> None:
    response = await stub.GetJwks(auth_pb2.GetJwksRequest(), timeout=5)

    assert response.jwks_json == jwks_json


async def test_user_method_without_a_token_is_unauthenticated(stub: auth_pb2_grpc.AuthServiceStub) -> None:
    error = await refusal(stub.GetMe(auth_pb2.GetMeRequest(), timeout=5))

    assert error.code() == grpc.StatusCode.UNAUTHENTICATED
    assert reason_of(error) == "unauthenticated"


async def test_user_method_with_an_invalid_token_is_unauthenticated(
    stub: auth_pb2_grpc.AuthServiceStub, mint: Callable[..., str]
) -> None:
    error = await refusal(stub.GetMe(auth_pb2.GetMeRequest(), metadata=bearer(mint(aud="elsewhere")), timeout=5))

    assert error.code() == grpc.StatusCode.UNAUTHENTICATED
    assert reason_of(error) == "invalid-token"


async def test_user_method_with_a_user_token_sees_the_principal(
    stub: auth_pb2_grpc.AuthServiceStub, mint: Callable[..., str]
) -> None:
    response = await stub.GetMe(auth_pb2.GetMeRequest(), metadata=bearer(mint(sub="user-9", role="user")), timeout=5)

    assert response.user.id == "user-9"
    assert response.user.role == "user"


async def test_admin_method_with_a_user_token_is_permission_denied(
    stub: auth_pb2_grpc.AuthServiceStub, mint: Callable[..., str]
) -> None:
    error = await refusal(stub.CountUsers(auth_pb2.CountUsersRequest(), metadata=bearer(mint(role="user")), timeout=5))

    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    assert reason_of(error) == "forbidden"


async def test_admin_method_without_a_token_is_unauthenticated(stub: auth_pb2_grpc.AuthServiceStub) -> None:
    error = await refusal(stub.CountUsers(auth_pb2.CountUsersRequest(), timeout=5))

    assert error.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_admin_method_with_an_admin_token_answers(
    stub: auth_pb2_grpc.AuthServiceStub, mint: Callable[..., str]
) -> None:
    response = await stub.CountUsers(auth_pb2.CountUsersRequest(), metadata=bearer(mint(role="admin")), timeout=5)

    assert (response.users, response.admins) == (12, 2)


async def test_domain_error_maps_to_its_status_with_the_reason_in_trailing_metadata(
    stub: auth_pb2_grpc.AuthServiceStub, mint: Callable[..., str]
) -> None:
    error = await refusal(stub.ListUsers(auth_pb2.ListUsersRequest(), metadata=bearer(mint()), timeout=5))

    assert error.code() == grpc.StatusCode.NOT_FOUND
    assert error.details() == "no page at that cursor"
    assert reason_of(error) == "cursor-not-found"


async def test_unexpected_exception_is_internal_and_leaks_nothing(stub: auth_pb2_grpc.AuthServiceStub) -> None:
    error = await refusal(stub.RefreshToken(auth_pb2.RefreshTokenRequest(refresh_token="r"), timeout=5))

    assert error.code() == grpc.StatusCode.INTERNAL
    assert error.details() == "internal error"
    everything_sent = f"{error.details()} {error.debug_error_string()} {error.trailing_metadata()}"
    assert SECRET_DETAIL not in everything_sent
    assert "Traceback" not in everything_sent
    assert "RuntimeError" not in everything_sent


@pytest.mark.parametrize("service", ["", SERVICE])
async def test_health_service_answers_serving_without_a_token(channel: grpc.aio.Channel, service: str) -> None:
    health = health_pb2_grpc.HealthStub(channel)

    response = await health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)

    assert response.status == health_pb2.HealthCheckResponse.SERVING


async def test_health_service_does_not_know_other_services(channel: grpc.aio.Channel) -> None:
    health = health_pb2_grpc.HealthStub(channel)

    error = await refusal(health.Check(health_pb2.HealthCheckRequest(service="facerestore.nope.v1.Nope"), timeout=5))

    assert error.code() == grpc.StatusCode.NOT_FOUND
