"""A gRPC server process for the balancing tests, started through the shared bootstrap
(GrpcServer: the same options, health service and shutdown as every service).

Its AuthService answers GetJwks with who answered: this server's name, and the peer address
of the client connection the call came in on (a new connection has a new client port).

    python grpc_identity_server.py NAME HOST PORT [MAX_CONNECTION_AGE_SECONDS]
"""

from __future__ import annotations

import asyncio
import json
import sys

import grpc

from facerestore.auth.v1 import auth_pb2, auth_pb2_grpc
from facerestore_common.grpc_server import GrpcServer


class IdentityService(auth_pb2_grpc.AuthServiceServicer):
    def __init__(self, name: str) -> None:
        self.name = name

    async def GetJwks(  # noqa: N802 - the RPC's name from proto/
        self, request: auth_pb2.GetJwksRequest, context: grpc.aio.ServicerContext
    ) -> auth_pb2.GetJwksResponse:
        return auth_pb2.GetJwksResponse(jwks_json=json.dumps({"server": self.name, "peer": context.peer()}))


async def main(name: str, host: str, port: int, max_connection_age_seconds: float) -> None:
    server = GrpcServer(
        ["facerestore.auth.v1.AuthService"],
        host,
        port,
        1024 * 1024,
        [],
        max_connection_age_seconds=max_connection_age_seconds,
        max_connection_age_grace_seconds=1.0,
    )
    auth_pb2_grpc.add_AuthServiceServicer_to_server(IdentityService(name), server.server)
    await server.run(grace_seconds=1.0)


if __name__ == "__main__":
    age = float(sys.argv[4]) if len(sys.argv) > 4 else 300.0
    asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3]), age))
