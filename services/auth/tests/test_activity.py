"""Auth records what happens for the admins' statistics: codes sent (by provider) and refused,
verifications, sign-ups, sign-ins, role changes and bans, first into its own MongoDB (so sign-in
never waits for the broker), then relayed as `activity.recorded` events that a real RabbitMQ
queue receives."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator
from pathlib import Path

import aio_pika
import pytest
from motor.motor_asyncio import AsyncIOMotorDatabase
from redis.asyncio import Redis

from auth_service.keys import KeyRing, load_key_ring
from auth_service.otp import OtpStore
from auth_service.sessions import SessionStore
from auth_service.signin import SignIn
from auth_service.sms import OutboxSender, SmsSender, SmsSendError
from auth_service.tokens import AccessTokenIssuer
from auth_service.users import UserRepository
from facerestore.events.v1 import events_pb2
from facerestore_common.activity import ActivityOutbox
from facerestore_common.errors import Unauthenticated, Unavailable
from facerestore_common.events import EventBus

ADMIN_PHONE = "+4915100000001"
USER_PHONE = "+4915123456789"


class FailingSender:
    """An SMS provider that is down."""

    name = "failing"

    async def send(self, to: str, body: str) -> None:
        raise SmsSendError("provider answered 503")


def last_code(outbox: Path) -> str:
    message = json.loads(outbox.read_text(encoding="utf-8").splitlines()[-1])
    return re.findall(r"\b\d{6}\b", message["body"])[0]


@pytest.fixture
def key_ring(tmp_path: Path) -> KeyRing:
    return load_key_ring(tmp_path / "keys", create_if_empty=True)


@pytest.fixture
def activity(database: AsyncIOMotorDatabase) -> ActivityOutbox:
    return ActivityOutbox(database, "auth")


def build(
    redis: Redis,
    unique_name: str,
    sms: SmsSender,
    database: AsyncIOMotorDatabase,
    key_ring: KeyRing,
    activity: ActivityOutbox,
) -> SignIn:
    return SignIn(
        otp=OtpStore(redis, b"secret", ttl_seconds=300, max_attempts=3, prefix=unique_name),
        sms=sms,
        users=UserRepository(database, activity=activity),
        sessions=SessionStore(database, ttl_seconds=3600),
        access_tokens=AccessTokenIssuer(key_ring, "iss", "aud", ttl_seconds=900),
        admin_phones=[ADMIN_PHONE],
        default_region="DE",
        activity=activity,
    )


async def recorded(database: AsyncIOMotorDatabase) -> list[tuple[str, str, dict[str, str]]]:
    docs = await database["activity_outbox"].find({}).sort("at_ms", 1).to_list(None)
    return [(doc["kind"], doc["user_id"], doc["labels"]) for doc in docs]


async def test_a_first_sign_in_records_code_sign_up_and_sign_in(
    redis: Redis,
    unique_name: str,
    database: AsyncIOMotorDatabase,
    key_ring: KeyRing,
    activity: ActivityOutbox,
    tmp_path: Path,
) -> None:
    outbox = tmp_path / "sms.jsonl"
    signin = build(redis, unique_name, OutboxSender(str(outbox)), database, key_ring, activity)

    await signin.request_code(USER_PHONE)
    with pytest.raises(Unauthenticated):
        await signin.verify_code(USER_PHONE, "000000" if last_code(outbox) != "000000" else "111111")
    _, user = await signin.verify_code(USER_PHONE, last_code(outbox))
    await signin.request_code(USER_PHONE)
    await signin.verify_code(USER_PHONE, last_code(outbox))

    assert await recorded(database) == [
        ("code.sent", "", {"channel": "sms", "provider": "outbox"}),
        ("code.failed", "", {"channel": "sms", "result": "wrong"}),
        ("code.verified", "", {"channel": "sms"}),
        ("user.signed_up", user.id, {}),
        ("user.signed_in", user.id, {"channel": "sms"}),
        ("code.sent", user.id, {"channel": "sms", "provider": "outbox"}),
        ("code.verified", user.id, {"channel": "sms"}),
        ("user.signed_in", user.id, {"channel": "sms"}),
    ]


async def test_a_provider_failure_role_change_and_ban_are_recorded(
    redis: Redis,
    unique_name: str,
    database: AsyncIOMotorDatabase,
    key_ring: KeyRing,
    activity: ActivityOutbox,
    tmp_path: Path,
) -> None:
    outbox = tmp_path / "sms.jsonl"
    signin = build(redis, unique_name, OutboxSender(str(outbox)), database, key_ring, activity)
    await signin.request_code(ADMIN_PHONE)
    _, admin = await signin.verify_code(ADMIN_PHONE, last_code(outbox))
    await signin.set_banned(admin.id, True)
    await signin.set_banned(admin.id, True)  # already banned: nothing changes, nothing is recorded
    await signin.set_banned(admin.id, False)
    down = build(redis, unique_name, FailingSender(), database, key_ring, activity)
    with pytest.raises(Unavailable):
        await down.request_code(USER_PHONE)

    kinds = [(kind, user_id, labels) for kind, user_id, labels in await recorded(database) if kind.startswith("user.")]
    assert kinds == [
        ("user.signed_up", admin.id, {}),
        ("user.role_changed", admin.id, {"from": "user", "to": "admin", "via": "sign-in"}),
        ("user.signed_in", admin.id, {"channel": "sms"}),
        ("user.banned", admin.id, {"via": "admin"}),
        ("user.unbanned", admin.id, {"via": "admin"}),
    ]
    assert (await recorded(database))[-1] == ("code.send_failed", "", {"channel": "sms", "provider": "failing"})


@pytest.fixture
async def activity_queue(amqp_url: str, unique_name: str) -> AsyncIterator[aio_pika.abc.AbstractQueue]:
    connection = await aio_pika.connect(amqp_url)
    channel = await connection.channel()
    exchange = await channel.declare_exchange(f"{unique_name}.events", aio_pika.ExchangeType.TOPIC, durable=True)
    queue = await channel.declare_queue(f"{unique_name}.observer", exclusive=True)
    await queue.bind(exchange, "activity.recorded")
    yield queue
    await channel.exchange_delete(f"{unique_name}.events")
    await channel.exchange_delete(f"{unique_name}.events.dlx")
    await connection.close()


async def test_the_relay_publishes_each_record_once_and_empties_the_outbox(
    database: AsyncIOMotorDatabase,
    activity: ActivityOutbox,
    activity_queue: aio_pika.abc.AbstractQueue,
    amqp_url: str,
    unique_name: str,
) -> None:
    await activity.record("user.signed_in", "u1", channel="sms")
    await activity.record("code.sent", "", channel="email", provider="smtp")
    bus = EventBus(amqp_url, f"{unique_name}.events", unique_name, "auth")
    await bus.connect()
    try:
        assert await activity.relay_once(bus) == 2
        assert await activity.relay_once(bus) == 0
    finally:
        await bus.close()
    assert await database["activity_outbox"].count_documents({}) == 0

    received = []
    for _ in range(2):
        message = await asyncio.wait_for(_next(activity_queue), 10)
        received.append(events_pb2.Envelope.FromString(message.body))
    assert [(e.type, e.producer) for e in received] == [("activity.recorded", "auth")] * 2
    assert [
        (e.activity_recorded.kind, e.activity_recorded.user_id, dict(e.activity_recorded.labels)) for e in received
    ] == [
        ("user.signed_in", "u1", {"channel": "sms"}),
        ("code.sent", "", {"channel": "email", "provider": "smtp"}),
    ]
    assert all(e.activity_recorded.count == 1 and e.activity_recorded.at.seconds > 0 for e in received)
    assert len({e.event_id for e in received}) == 2


async def _next(queue: aio_pika.abc.AbstractQueue) -> aio_pika.abc.AbstractIncomingMessage:
    while True:
        message = await queue.get(no_ack=True, fail=False)
        if message is not None:
            return message
        await asyncio.sleep(0.05)
