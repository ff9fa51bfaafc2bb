"""Wiring and start-up of the auth service."""

from __future__ import annotations

import asyncio
import contextlib
import functools
from pathlib import Path

from redis.asyncio import Redis

from auth_service.email_sender import SmtpEmailSender
from auth_service.email_signin import EmailSignIn
from auth_service.erasure import AccountErasure
from auth_service.grpc_api import ACCESS_POLICY, AuthApi
from auth_service.keys import KeyRing, key_files, load_key_ring
from auth_service.otp import OtpStore
from auth_service.phones import PhonePolicy
from auth_service.sessions import SessionStore
from auth_service.settings import Settings
from auth_service.signin import SignIn
from auth_service.sms import build_sender
from auth_service.throttling import SignInThrottle
from auth_service.tokens import AccessTokenIssuer
from auth_service.users import UserRepository
from facerestore.auth.v1 import auth_pb2_grpc
from facerestore_common import mongo
from facerestore_common.activity import ActivityOutbox, stop_task
from facerestore_common.bootstrap import run_service
from facerestore_common.events import EventBus
from facerestore_common.grpc_server import AuthInterceptor, GrpcServer
from facerestore_common.health import redis_check
from facerestore_common.logging import get_logger
from facerestore_common.metrics_server import serve_metrics
from facerestore_common.redis_connect import ping_when_available
from facerestore_common.revocation import SessionRevocations
from facerestore_common.startup_wait import StartupDeadline
from facerestore_common.tokens import JwksCache, TokenVerifier
from facerestore_common.topology import CONSUMER_BINDINGS

log = get_logger(__name__)


async def reload_keys_forever(keys: KeyRing, directory: Path, interval_seconds: int, activation: float) -> None:
    """Pick up keys added by `rotate-keys` (or a rotated Secret volume) without a restart; the
    keys are parsed again only when the directory's key files changed since the last read."""
    read: frozenset[tuple[str, int, int, int]] | None = None
    while True:
        await asyncio.sleep(interval_seconds)
        try:
            files = key_files(directory)
            if files == read:
                continue
            fresh = load_key_ring(directory, create_if_empty=False, activation_seconds=activation)
        except (OSError, ValueError):
            log.error("key_reload_failed", directory=str(directory), exc_info=True)
            continue
        read = files
        if fresh.kids != keys.kids:
            keys.replace(fresh)
            log.info("keys_reloaded", signing_kid=keys.signing_key.kid, kids=keys.kids)


def otp_store(redis: Redis, settings: Settings, prefix: str) -> OtpStore:
    return OtpStore(
        redis,
        settings.otp_hmac_secret.get_secret_value().encode(),
        settings.otp_ttl_seconds,
        settings.otp_max_attempts,
        prefix=f"{settings.redis_key_prefix}:{prefix}",
    )


async def serve(settings: Settings) -> None:
    deadline = StartupDeadline(settings.startup_wait_seconds)
    database = await mongo.connect_when_available(settings.mongo_url, settings.mongo_database, deadline)
    # Sign-ups, sign-ins, codes, role changes and bans for the admins: kept in MongoDB first,
    # relayed to the broker (never waited for: sign-in works while the broker is away).
    activity = ActivityOutbox(database, "auth")
    await activity.create_indexes()
    bus = EventBus(
        settings.amqp_url.get_secret_value(),
        settings.events_exchange,
        settings.queue_prefix,
        "auth",
        topology=CONSUMER_BINDINGS,
        robust=False,  # the relay connects it again after an outage
    )
    relay = asyncio.create_task(activity.run(bus, reconnect=True))
    users = UserRepository(database, activity=activity)
    await users.create_indexes()
    redis = Redis.from_url(settings.redis_url)
    await ping_when_available(redis, deadline)
    revocations = SessionRevocations(redis, settings.redis_key_prefix)
    sessions = SessionStore(
        database, settings.refresh_token_ttl_seconds, revocations, settings.access_token_ttl_seconds
    )
    await sessions.create_indexes()

    key_dir = Path(settings.jwt_key_dir)
    keys = load_key_ring(
        key_dir,
        create_if_empty=settings.environment != "production",
        activation_seconds=settings.jwt_key_activation_seconds,
    )

    async def local_jwks() -> str:
        return keys.jwks_json()

    verifier = TokenVerifier(
        JwksCache(local_jwks, ttl_seconds=1, min_refetch_seconds=0),
        settings.jwt_issuer,
        settings.jwt_audience,
        settings.jwt_leeway_seconds,
        revocations=revocations,
    )
    throttle = SignInThrottle(
        settings.redis_url,
        prefix=f"{settings.redis_key_prefix}:auth",
        requests_per_identity=settings.otp_requests_per_phone,
        requests_per_ip=settings.otp_requests_per_ip,
        verifications_per_identity=settings.otp_verifications_per_phone,
        resend_cooldown_seconds=settings.otp_resend_cooldown_seconds,
    )
    signin = SignIn(
        otp=otp_store(redis, settings, "otp"),
        sms=build_sender(settings),
        users=users,
        sessions=sessions,
        access_tokens=AccessTokenIssuer(
            keys, settings.jwt_issuer, settings.jwt_audience, settings.access_token_ttl_seconds
        ),
        admin_phones=settings.admin_phone_list(),
        phone_policy=PhonePolicy(settings.phone_default_region, settings.allowed_regions(), settings.denied_regions()),
        throttle=throttle,
        test_codes=settings.test_codes(),
        activity=activity,
    )
    email = EmailSignIn(
        signin,
        confirmations=otp_store(redis, settings, "email-confirm"),
        sign_in_codes=otp_store(redis, settings, "email-otp"),
        sender=SmtpEmailSender(settings),
        throttle=throttle,
    )
    server = GrpcServer.from_settings(
        settings,
        ["facerestore.auth.v1.AuthService"],
        [AuthInterceptor(verifier, ACCESS_POLICY)],
        checks={"mongodb": functools.partial(mongo.ping, database), "redis": redis_check(redis)},
    )
    metrics = serve_metrics(settings)
    # DELETE /v1/me: the account closes at once; user.deleted goes out now or, after a crash or
    # while the broker is away, from the retry loop.
    erasure = AccountErasure(database, sessions, bus, settings.pseudonym_secret.get_secret_value())
    await erasure.create_indexes()
    erasure_retry = asyncio.create_task(erasure.run_forever(settings.erasure_retry_seconds))
    auth_pb2_grpc.add_AuthServiceServicer_to_server(AuthApi(signin, email, users, keys, erasure), server.server)
    log.info(
        "auth_starting",
        sms_provider=settings.sms_provider,
        signing_kid=keys.signing_key.kid,
        test_numbers=len(settings.test_codes()),
    )
    reloader = asyncio.create_task(
        reload_keys_forever(keys, key_dir, settings.jwt_key_reload_seconds, settings.jwt_key_activation_seconds)
    )

    async def close() -> None:
        if metrics is not None:
            metrics.close()
        for task in (reloader, erasure_retry):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await stop_task(relay)
        await bus.close()
        await redis.aclose()
        database.client.close()

    await server.run(on_stop=close)


def run() -> None:
    run_service(Settings(), serve)


if __name__ == "__main__":
    run()
