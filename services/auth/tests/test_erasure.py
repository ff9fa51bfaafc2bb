"""Erasing an account over real Mongo (nx-27017), Redis and RabbitMQ: the account closes at once
(sessions revoked, refresh tokens, user, email and role changes gone, the phone number free),
and user.deleted goes out; when the broker cannot take it, the erasure stays pending with
the user id, and the retry completes it with the same event id, then keeps only the pseudonym."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import aio_pika
import pytest
from motor.motor_asyncio import AsyncIOMotorDatabase
from redis.asyncio import Redis

from auth_service.erasure import AccountErasure
from auth_service.sessions import SessionStore
from auth_service.users import UserRepository
from facerestore.events.v1 import events_pb2
from facerestore_common.events import EventBus
from facerestore_common.pseudonym import pseudonym
from facerestore_common.revocation import SessionRevocations

SECRET = "auth-erasure-tests-pseudonym-secret"
PHONE = "+4915112345678"


@pytest.fixture
async def bus(amqp_url: str, unique_name: str) -> AsyncIterator[EventBus]:
    event_bus = EventBus(amqp_url, f"{unique_name}.events", unique_name, "auth-tests")
    yield event_bus
    await event_bus.close()
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel()
        for queue in event_bus.consumer_queues("probe"):
            await channel.queue_delete(queue)
        for exchange in (f"{unique_name}.events", event_bus.dead_letter_exchange):
            await channel.exchange_delete(exchange)


@pytest.fixture
def revocations(redis: Redis, unique_name: str) -> SessionRevocations:
    return SessionRevocations(redis, unique_name)


@pytest.fixture
async def sessions(database: AsyncIOMotorDatabase, revocations: SessionRevocations) -> SessionStore:
    store = SessionStore(database, 3600, revocations, access_token_ttl_seconds=900)
    await store.create_indexes()
    return store


async def read_user_deleted(amqp_url: str, queue: str, wait_seconds: float = 10.0) -> events_pb2.Envelope:
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel()
        source = await channel.get_queue(queue, ensure=True)
        deadline = time.monotonic() + wait_seconds
        while time.monotonic() < deadline:
            message = await source.get(no_ack=True, fail=False)
            if message is not None:
                return events_pb2.Envelope.FromString(message.body)
            await asyncio.sleep(0.05)
    raise AssertionError("no user.deleted arrived")


async def test_an_erasure_the_broker_did_not_take_closes_the_account_at_once_and_is_completed_later(
    database: AsyncIOMotorDatabase,
    sessions: SessionStore,
    revocations: SessionRevocations,
    bus: EventBus,
    amqp_url: str,
) -> None:
    users = UserRepository(database)
    await users.create_indexes()
    user = await users.sign_in(PHONE, promote_to_admin=True)
    await users.set_email(user.id, "anna@example.org")
    first = await sessions.start(user.id)
    second = await sessions.start(user.id)
    await sessions.revoke(first.session_id)  # an ended session: its access token may still be young
    other = await users.sign_in("+4915187654321", promote_to_admin=False)
    other_session = await sessions.start(other.id)
    erasure = AccountErasure(database, sessions, bus, SECRET, publish_timeout_seconds=2)
    await erasure.create_indexes()

    # The bus is not connected: publishing fails, as while the broker is away.
    erasure_id = await erasure.erase(user.id)

    assert await users.get(user.id) is None
    assert await users.by_phone(PHONE) is None and await users.by_email("anna@example.org") is None
    assert await users.role_changes(user.id) == []
    assert await database["refresh_tokens"].count_documents({"user_id": user.id}) == 0
    for session in (first, second):
        assert await revocations.is_revoked(session.session_id)
    assert not await revocations.is_revoked(other_session.session_id)
    assert (await users.get(other.id)) is not None
    pending = await database["erasures"].find_one({"_id": erasure_id})
    assert pending["state"] == "pending" and pending["user_id"] == user.id
    # The phone number is free: signing in with it makes a new account.
    assert (await users.sign_in(PHONE, promote_to_admin=False)).id != user.id
    await database["users"].delete_one({"phone": PHONE})

    await bus.connect()
    await bus.declare_queue("probe", ["user.deleted"])
    assert await erasure.resume_pending() == 1

    envelope = await read_user_deleted(amqp_url, bus.queue_name("probe"))
    assert envelope.user_deleted.user_id == user.id
    assert envelope.event_id == pending["event_id"]
    done = await database["erasures"].find_one({"_id": erasure_id})
    assert done["state"] == "published" and "user_id" not in done
    assert done["pseudonym"] == pseudonym(SECRET, user.id)
    assert await erasure.resume_pending() == 0
