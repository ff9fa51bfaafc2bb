"""The moderation queue from reports and low ratings, admins' decisions on it, the audit log
read back with filters and pages (Mongo stand-in), and the live queue figures asked of the
real RabbitMQ with passive declares."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aio_pika
import pytest
from motor.motor_asyncio import AsyncIOMotorDatabase

from admin_service.audit import AuditFilter, AuditLog
from admin_service.moderation import ModerationQueue
from admin_service.queues import QueueInspector
from facerestore_common import mongo
from facerestore_common.events import EventBus
from facerestore_common.timeutil import now_ms
from facerestore_common.topology import CONSUMER_BINDINGS, LEGACY_INFERENCE_CONSUMER, embed_queue_name


@pytest.fixture
async def database(mongo_url: str, unique_name: str) -> AsyncIterator[AsyncIOMotorDatabase]:
    db = mongo.connect(mongo_url, unique_name)
    yield db
    db.client.close()


@pytest.fixture
async def queue(database: AsyncIOMotorDatabase) -> ModerationQueue:
    moderation = ModerationQueue(database)
    await moderation.create_indexes()
    return moderation


async def test_reports_and_low_ratings_open_cases_that_decisions_resolve(queue: ModerationQueue) -> None:
    await queue.reported("e1", "img-1", "alice", "inappropriate", 1000)
    await queue.reported("e1", "img-1", "alice", "inappropriate", 1000)  # redelivered
    await queue.reported("e2", "img-1", "alice", "wrong-person", 1500)
    await queue.rated("e3", "img-2", "bob", 4, 2000)  # not low: no case
    await queue.rated("e4", "img-3", "bob", 1, 3000)

    cases, cursor = await queue.page("open", 1, "")
    assert [case.image_id for case in cases] == ["img-1"] and cursor
    first = cases[0]
    assert (first.reports, first.report_reasons, first.user_id) == (
        2,
        {"inappropriate": 1, "wrong-person": 1},
        "alice",
    )
    assert first.opened_at_ms == 1000 and not first.hidden
    rest, end = await queue.page("open", 10, cursor)
    assert [(case.image_id, case.low_ratings, case.lowest_rating) for case in rest] == [("img-3", 1, 1)]
    assert end == ""

    await queue.decide("img-1", "alice", "hidden", "looks like someone else", "admin-1")
    hidden = (await queue.page("open", 10, ""))[0][0]
    assert hidden.image_id == "img-1" and hidden.hidden and hidden.status == "open" and hidden.resolution == "hidden"
    await queue.decide("img-1", "alice", "deleted", "not the owner's face", "admin-1")
    await queue.decide("img-3", "bob", "dismissed", "fine", "admin-2")
    assert (await queue.page("open", 10, ""))[0] == []
    resolved, _ = await queue.page("resolved", 10, "")
    assert [(c.image_id, c.resolution, c.resolution_reason, c.resolved_by, c.hidden) for c in resolved] == [
        ("img-1", "deleted", "not the owner's face", "admin-1", False),
        ("img-3", "dismissed", "fine", "admin-2", False),
    ]

    await queue.reported("e5", "img-3", "bob", "poor-quality", 9000)  # a new report opens it again
    (reopened,), _ = await queue.page("open", 10, "")
    assert (reopened.image_id, reopened.status, reopened.reports, reopened.opened_at_ms) == ("img-3", "open", 1, 9000)


async def test_the_audit_log_reads_newest_first_with_filters_and_pages(database: AsyncIOMotorDatabase) -> None:
    audit = AuditLog(database)
    await audit.create_indexes()
    started = now_ms()
    await audit.record("admin-1", "image.hide", "img-1", reason="reported", owner_id="alice")
    await audit.record("admin-2", "user.ban", "bob", reason="spam")
    await audit.record("admin-1", "image.delete", "img-1", reason="confirmed", owner_id="alice")

    everything, cursor = await audit.page(AuditFilter(), 2, "")
    assert [entry.action for entry in everything] == ["image.delete", "user.ban"] and cursor
    rest, end = await audit.page(AuditFilter(), 2, cursor)
    assert [entry.action for entry in rest] == ["image.hide"] and end == ""
    assert rest[0].details == {"reason": "reported", "owner_id": "alice"} and rest[0].at_ms >= started

    by_actor, _ = await audit.page(AuditFilter(actor_id="admin-1"), 10, "")
    assert [entry.action for entry in by_actor] == ["image.delete", "image.hide"]
    by_target, _ = await audit.page(AuditFilter(target="bob"), 10, "")
    assert [entry.action for entry in by_target] == ["user.ban"]
    by_action, _ = await audit.page(AuditFilter(action="image.hide", actor_id="admin-1"), 10, "")
    assert [entry.target for entry in by_action] == ["img-1"]
    assert (await audit.page(AuditFilter(from_ms=now_ms() + 1000), 10, ""))[0] == []
    assert len((await audit.page(AuditFilter(from_ms=started, to_ms=now_ms() + 1), 10, ""))[0]) == 3


@pytest.fixture
async def topology(amqp_url: str, unique_name: str) -> AsyncIterator[EventBus]:
    bus = EventBus(amqp_url, f"{unique_name}.events", unique_name, "test", topology=CONSUMER_BINDINGS)
    await bus.connect()
    yield bus
    await bus.close()
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel()
        for consumer in CONSUMER_BINDINGS:
            for name in bus.consumer_queues(consumer):
                await channel.queue_delete(name)
        await channel.queue_delete(embed_queue_name(unique_name))
        for exchange in (f"{unique_name}.events", f"{unique_name}.events.dlx"):
            await channel.exchange_delete(exchange)


async def test_queue_figures_come_from_the_broker(topology: EventBus, amqp_url: str, unique_name: str) -> None:
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel()
        gfpgan_queue = f"{unique_name}.inference.gfpgan"
        for _ in range(3):
            await channel.default_exchange.publish(aio_pika.Message(b"x"), routing_key=gfpgan_queue)
        await channel.default_exchange.publish(aio_pika.Message(b"x"), routing_key=f"{unique_name}.history.dlq")
        consuming = await connection.channel()
        history = await consuming.get_queue(f"{unique_name}.history")

        async def hold(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            await asyncio.sleep(0)

        await history.consume(hold)
        inspector = QueueInspector(amqp_url, unique_name)
        try:
            states = {state.consumer: state for state in await inspector.inspect()}
        finally:
            await inspector.close()
    assert set(states) == {*CONSUMER_BINDINGS, "embed"}  # no queue of an older release is left
    inference, history_state = states["inference.gfpgan"], states["history"]
    assert (inference.messages, inference.consumers, inference.available) == (3, 0, True)
    assert (history_state.consumers, history_state.dead_letter_messages) == (1, 1)
    assert states["admin"].available and states["admin"].messages == 0
    assert not states["embed"].available  # nobody declared it: reported, not an error


async def test_the_single_inference_queue_of_an_older_release_is_listed_while_it_exists(
    topology: EventBus, amqp_url: str, unique_name: str
) -> None:
    await topology.declare_queue(LEGACY_INFERENCE_CONSUMER, ["image.uploaded"])
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel()
        await channel.default_exchange.publish(aio_pika.Message(b"x"), routing_key=f"{unique_name}.inference")
        inspector = QueueInspector(amqp_url, unique_name)
        try:
            states = {state.consumer: state for state in await inspector.inspect()}
        finally:
            await inspector.close()
        for name in topology.consumer_queues(LEGACY_INFERENCE_CONSUMER):
            await channel.queue_delete(name)

    legacy = states[LEGACY_INFERENCE_CONSUMER]
    assert (legacy.queue, legacy.messages, legacy.available) == (f"{unique_name}.inference", 1, True)
    assert set(states) == {*CONSUMER_BINDINGS, LEGACY_INFERENCE_CONSUMER, "embed"}


async def test_an_unreachable_broker_gives_unavailable_queues_not_an_error() -> None:
    inspector = QueueInspector("amqp://guest:guest@127.0.0.1:1/", "nowhere", timeout_seconds=2)
    states = await inspector.inspect()
    await inspector.close()
    assert states and not any(state.available for state in states)


async def test_entries_written_before_paging_existed_are_listed_too(database: AsyncIOMotorDatabase) -> None:
    await database["audit_log"].insert_one(
        {"_id": "old-1", "actor_id": "admin-0", "action": "image.delete", "target": "img-0", "details": {}, "at_ms": 5}
    )
    audit = AuditLog(database)
    await audit.create_indexes()
    await audit.record("admin-1", "user.ban", "bob", reason="spam")
    first, cursor = await audit.page(AuditFilter(), 1, "")
    second, end = await audit.page(AuditFilter(), 1, cursor)
    assert [entry.action for entry in first + second] == ["user.ban", "image.delete"] and end == ""
