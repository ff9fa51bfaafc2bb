"""Wiring and start-up of the auth service."""

from __future__ import annotations

import asyncio
from pathlib import Path

from redis.asyncio import Redis

from auth_service.grpc_api import ACCESS_POLICY, AuthApi
from auth_service.keys import load_key_ring
from auth_service.otp import OtpStore
from auth_service.sessions import SessionStore
from auth_service.settings import Settings
from auth_service.signin import SignIn
from auth_service.sms import build_sender
from auth_service.tokens import AccessTokenIssuer
from auth_service.users import UserRepository
from facerestore.auth.v1 import auth_pb2_grpc
from facerestore_common import mongo
from facerestore_common.grpc_server import AuthInterceptor, GrpcServer
from facerestore_common.logging import configure_logging, get_logger
from facerestore_common.telemetry import configure_tracing
from facerestore_common.tokens import JwksCache, TokenVerifier

log = get_logger(__name__)


async def serve(settings: Settings) -> None:
    database = mongo.connect(settings.mongo_url, settings.mongo_database)
    users = UserRepository(database)
    sessions = SessionStore(database, settings.refresh_token_ttl_seconds)
    await users.create_indexes()
    await sessions.create_indexes()
    redis = Redis.from_url(settings.redis_url)
    await redis.ping()

    keys = load_key_ring(Path(settings.jwt_key_dir), create_if_empty=settings.environment != "production")

    async def local_jwks() -> str:
        return keys.jwks_json()

    verifier = TokenVerifier(
        JwksCache(local_jwks, settings.jwks_cache_seconds),
        settings.jwt_issuer,
        settings.jwt_audience,
        settings.jwt_leeway_seconds,
    )
    signin = SignIn(
        otp=OtpStore(
            redis,
            settings.otp_hmac_secret.get_secret_value().encode(),
            settings.otp_ttl_seconds,
            settings.otp_max_attempts,
        ),
        sms=build_sender(settings),
        users=users,
        sessions=sessions,
        access_tokens=AccessTokenIssuer(
            keys, settings.jwt_issuer, settings.jwt_audience, settings.access_token_ttl_seconds
        ),
        admin_phones=settings.admin_phone_list(),
        default_region=settings.phone_default_region,
    )
    server = GrpcServer(
        ["facerestore.auth.v1.AuthService"],
        settings.grpc_host,
        settings.grpc_port,
        settings.grpc_max_message_bytes,
        [AuthInterceptor(verifier, ACCESS_POLICY)],
    )
    auth_pb2_grpc.add_AuthServiceServicer_to_server(AuthApi(signin, users, keys), server.server)
    log.info("auth_starting", sms_provider=settings.sms_provider, signing_kid=keys.signing_key.kid)

    async def close() -> None:
        await redis.aclose()
        database.client.close()

    await server.run(on_stop=close)


def run() -> None:
    settings = Settings()
    configure_logging(settings.service_name, settings.log_level)
    configure_tracing(settings.service_name)
    asyncio.run(serve(settings))


if __name__ == "__main__":
    run()
