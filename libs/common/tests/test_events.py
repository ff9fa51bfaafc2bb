"""The event bus on the machine's real RabbitMQ, with processed event ids kept in the
MongoDB stand-in. Every test gets its own exchange and queues (named from
`unique_name`) and deletes them at the end, so the shared broker stays clean."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Any, cast

import aio_pika
import pytest
from aio_pika.abc import AbstractIncomingMessage, AbstractRobustConnection
from motor.motor_asyncio import AsyncIOMotorDatabase
from opentelemetry import trace
from prometheus_client import REGISTRY
from structlog.testing import capture_logs

from facerestore.events.v1 import events_pb2
from facerestore_common import mongo
from facerestore_common.events import (
    EventBus,
    EventHandler,
    GiveUpHook,
    PermanentEventError,
    ProcessedEvents,
    new_envelope,
    routing_key_of,
    topic_matches,
)

TRACE_ID = 0x4BF92F3577B34DA6A3CE929D0E0E4736
SPAN_ID = 0x00F067AA0BA902B7
TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
WAIT_SECONDS = 10.0


def consumed(queue: str, outcome: str) -> float:
    """events_consumed_total for a queue (each test's queues have names of their own)."""
    return REGISTRY.get_sample_value("events_consumed_total", {"queue": queue, "outcome": outcome}) or 0.0


def uploaded(image_id: str = "img-1") -> events_pb2.Envelope:
    """An image.uploaded envelope created inside a known trace."""
    span_context = trace.SpanContext(
        TRACE_ID, SPAN_ID, is_remote=False, trace_flags=trace.TraceFlags(trace.TraceFlags.SAMPLED)
    )
    with trace.use_span(trace.NonRecordingSpan(span_context)):
        return new_envelope(
            "upload",
            image_uploaded=events_pb2.ImageUploaded(
                image_id=image_id, user_id="user-1", original_key=f"originals/user-1/{image_id}.jpg", tags=["old"]
            ),
        )


def deleted(image_id: str = "img-1") -> events_pb2.Envelope:
    return new_envelope("upload", image_deleted=events_pb2.ImageDeleted(image_id=image_id, user_id="user-1"))


@dataclass
class Broker:
    """The bus under test plus a separate connection to look into queues, as an operator would."""

    bus: EventBus
    exchange: str
    inspector: AbstractRobustConnection
    database: AsyncIOMotorDatabase
    consumers: list[str] = field(default_factory=list)

    def processed(self, consumer: str) -> ProcessedEvents:
        return ProcessedEvents(self.database["processed_events"], consumer)

    async def consume(
        self,
        consumer: str,
        routing_keys: list[str],
        handler: EventHandler,
        prefetch: int = 1,
        *,
        max_attempts: int = 3,
        retry_base_seconds: float = 1.0,
        retry_max_seconds: float = 60.0,
        max_unfinished_deliveries: int = 5,
        on_give_up: GiveUpHook | None = None,
    ) -> str:
        if consumer not in self.consumers:
            self.consumers.append(consumer)
        await self.bus.consume(
            consumer,
            routing_keys,
            handler,
            self.processed(consumer),
            prefetch,
            max_attempts=max_attempts,
            retry_base_seconds=retry_base_seconds,
            retry_max_seconds=retry_max_seconds,
            max_unfinished_deliveries=max_unfinished_deliveries,
            on_give_up=on_give_up,
        )
        return self.bus.queue_name(consumer)

    async def ready_count(self, queue: str) -> int:
        """Messages waiting in a queue (unacked ones return here once the bus is closed)."""
        channel = await self.inspector.channel()
        try:
            declared = await channel.declare_queue(queue, passive=True)
            return int(declared.declaration_result.message_count or 0)
        finally:
            await channel.close()

    async def take(self, queue: str, within: float = WAIT_SECONDS) -> AbstractIncomingMessage:
        """Take one message off a queue, waiting for it to arrive."""
        channel = await self.inspector.channel()
        try:
            source = await channel.get_queue(queue, ensure=False)
            deadline = time.monotonic() + within
            while time.monotonic() < deadline:
                message = await source.get(no_ack=True, fail=False)
                if message is not None:
                    return message
                await asyncio.sleep(0.05)
            raise AssertionError(f"nothing arrived in {queue} within {within} s")
        finally:
            await channel.close()


@pytest.fixture
async def broker(amqp_url: str, mongo_url: str, unique_name: str) -> AsyncIterator[Broker]:
    exchange = f"{unique_name}.events"
    bus = EventBus(amqp_url, exchange, unique_name, producer="events-test")
    await bus.connect()
    inspector = await aio_pika.connect_robust(amqp_url)
    database = mongo.connect(mongo_url, unique_name)
    state = Broker(bus, exchange, inspector, database)
    try:
        yield state
    finally:
        await bus.close()
        channel = await inspector.channel()
        for consumer in state.consumers:
            for queue in bus.consumer_queues(consumer):
                await channel.queue_delete(queue)
        await channel.exchange_delete(exchange)
        await channel.exchange_delete(bus.dead_letter_exchange)
        await inspector.close()
        await database.client.drop_database(unique_name)
        database.client.close()


async def test_published_event_reaches_only_consumers_bound_to_its_routing_key(broker: Broker) -> None:
    received: dict[str, list[events_pb2.Envelope]] = {"history": [], "cleanup": []}
    trace_ids: list[int] = []
    got_upload = asyncio.Event()
    got_delete = asyncio.Event()

    async def on_upload(envelope: events_pb2.Envelope) -> None:
        received["history"].append(envelope)
        trace_ids.append(trace.get_current_span().get_span_context().trace_id)
        got_upload.set()

    async def on_delete(envelope: events_pb2.Envelope) -> None:
        received["cleanup"].append(envelope)
        got_delete.set()

    await broker.consume("history", ["image.uploaded"], on_upload)
    await broker.consume("cleanup", ["image.deleted"], on_delete)
    upload = uploaded()
    delete = deleted()

    await broker.bus.publish(upload)
    # Publishing waits for the broker's confirm, i.e. the upload was routed before the
    # delete: had it reached the cleanup queue, it would be delivered there first.
    await broker.bus.publish(delete)
    await asyncio.wait_for(got_upload.wait(), WAIT_SECONDS)
    await asyncio.wait_for(got_delete.wait(), WAIT_SECONDS)

    assert received["history"] == [upload]
    assert received["cleanup"] == [delete]
    (got,) = received["history"]
    assert got.type == "image.uploaded"
    assert got.image_uploaded.image_id == "img-1"
    assert list(got.image_uploaded.tags) == ["old"]
    assert got.traceparent == TRACEPARENT
    assert trace_ids == [TRACE_ID]  # the handler runs inside the publisher's trace


async def test_wildcard_binding_receives_every_image_event(broker: Broker) -> None:
    types: list[str] = []
    both = asyncio.Event()

    async def handler(envelope: events_pb2.Envelope) -> None:
        types.append(envelope.type)
        if len(types) == 2:
            both.set()

    await broker.consume("audit", ["image.*"], handler)
    await broker.bus.publish(uploaded())
    await broker.bus.publish(deleted())
    await asyncio.wait_for(both.wait(), WAIT_SECONDS)

    assert types == ["image.uploaded", "image.deleted"]


async def test_event_delivered_twice_is_handled_once_and_both_deliveries_are_acked(broker: Broker) -> None:
    handled: list[str] = []
    sentinel_seen = asyncio.Event()
    envelope = uploaded("img-dup")
    sentinel = uploaded("img-sentinel")

    async def handler(got: events_pb2.Envelope) -> None:
        handled.append(got.event_id)
        if got.event_id == sentinel.event_id:
            sentinel_seen.set()

    # Prefetch 1: a message is delivered only after the one before it was acked, so once
    # the sentinel arrives both copies of the duplicate have been settled.
    queue = await broker.consume("history", ["image.uploaded"], handler, prefetch=1)
    await broker.bus.publish(envelope)
    await broker.bus.publish(envelope)
    await broker.bus.publish(sentinel)
    await asyncio.wait_for(sentinel_seen.wait(), WAIT_SECONDS)
    await broker.bus.close()  # an unacked message would now return to the queue

    assert handled == [envelope.event_id, sentinel.event_id]
    assert await broker.processed("history").seen(envelope.event_id)
    assert consumed(queue, "acked") == 2
    assert consumed(queue, "duplicate") == 1
    assert await broker.ready_count(queue) == 0
    assert await broker.ready_count(f"{queue}.dlq") == 0


async def test_processed_event_ids_are_kept_per_consumer(broker: Broker) -> None:
    history = broker.processed("history")
    cleanup = broker.processed("cleanup")

    await history.mark("event-1")
    await history.mark("event-1")  # marking twice is harmless

    assert await history.seen("event-1")
    assert not await cleanup.seen("event-1")
    assert not await history.seen("event-2")


class GiveUps:
    """An on_give_up hook that records what it was told."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []

    async def __call__(self, envelope: events_pb2.Envelope, reason: str) -> None:
        self.calls.append((envelope.event_id, reason))


async def test_permanent_error_dead_letters_the_event_at_once_and_says_why(broker: Broker) -> None:
    calls: list[str] = []
    give_ups = GiveUps()

    async def handler(envelope: events_pb2.Envelope) -> None:
        calls.append(envelope.event_id)
        raise PermanentEventError("image record is gone")

    queue = await broker.consume("history", ["image.uploaded"], handler, on_give_up=give_ups)
    envelope = uploaded()
    await broker.bus.publish(envelope)

    dead = await broker.take(f"{queue}.dlq")

    assert events_pb2.Envelope.FromString(dead.body) == envelope
    assert calls == [envelope.event_id]
    assert give_ups.calls == [(envelope.event_id, "permanent: image record is gone")]
    (death,) = cast(list[dict[str, Any]], dead.headers["x-death"])
    assert (death["reason"], death["queue"], death["count"]) == ("rejected", queue, 1)
    assert not await broker.processed("history").seen(envelope.event_id)
    assert await broker.ready_count(f"{queue}.retry") == 0


async def test_always_failing_handler_is_retried_with_growing_delays_then_dead_lettered_with_a_reason(
    broker: Broker,
) -> None:
    call_times: list[float] = []
    give_ups = GiveUps()

    async def handler(envelope: events_pb2.Envelope) -> None:
        call_times.append(time.monotonic())
        raise ConnectionError("storage is down")

    with capture_logs() as logs:
        queue = await broker.consume(
            "history",
            ["image.uploaded"],
            handler,
            max_attempts=4,
            retry_base_seconds=0.2,
            retry_max_seconds=0.4,
            on_give_up=give_ups,
        )
        envelope = uploaded()
        await broker.bus.publish(envelope)

        dead = await broker.take(f"{queue}.dlq")
        await broker.bus.close()

    # Doubling from 0.2 s, then 0.4 s again where doubling would give 0.8 s.
    delays = [entry["delay_seconds"] for entry in logs if entry["event"] == "event_retry_scheduled"]
    assert delays == [0.2, 0.4, 0.4]
    assert len(call_times) == 4
    # The delay queue held each retry for at least its delay (a busy machine only adds to the waits).
    waits = [later - earlier for earlier, later in pairwise(call_times)]
    assert all(wait >= delay for wait, delay in zip(waits, delays, strict=True)), (waits, delays)
    assert give_ups.calls == [(envelope.event_id, "retries_exhausted: ConnectionError")]
    assert (consumed(queue, "retried"), consumed(queue, "dead_lettered"), consumed(queue, "acked")) == (3, 1, 0)
    assert events_pb2.Envelope.FromString(dead.body) == envelope
    assert dead.message_id == envelope.event_id
    assert dead.headers["x-attempt"] == 4
    assert dead.headers["traceparent"] == TRACEPARENT
    deaths = {
        (death["queue"], death["reason"], death["count"])
        for death in cast(list[dict[str, Any]], dead.headers["x-death"])
    }
    # Each of the three retries waited out its TTL in the delay queue.
    assert deaths == {(f"{queue}.retry", "expired", 3), (queue, "rejected", 1)}
    for leftover in (queue, f"{queue}.retry", f"{queue}.dlq"):
        assert await broker.ready_count(leftover) == 0, leftover
    assert not await broker.processed("history").seen(envelope.event_id)


async def test_handler_failing_once_is_retried_for_its_own_consumer_only_and_the_event_is_handled_once(
    broker: Broker,
) -> None:
    history_calls: list[str] = []
    history_done: list[str] = []
    audit_calls: list[str] = []
    done = asyncio.Event()
    give_ups = GiveUps()

    async def flaky(envelope: events_pb2.Envelope) -> None:
        history_calls.append(envelope.event_id)
        if len(history_calls) == 1:
            raise TimeoutError("database timed out")
        history_done.append(envelope.event_id)
        done.set()

    async def audit(envelope: events_pb2.Envelope) -> None:
        audit_calls.append(envelope.event_id)

    queue = await broker.consume("history", ["image.uploaded"], flaky, retry_base_seconds=0.2, on_give_up=give_ups)
    audit_queue = await broker.consume("audit", ["image.uploaded"], audit)
    envelope = uploaded()
    await broker.bus.publish(envelope)
    await asyncio.wait_for(done.wait(), WAIT_SECONDS)
    await asyncio.sleep(0.5)  # time enough for a stray copy to reach the audit consumer
    await broker.bus.close()

    assert history_calls == [envelope.event_id, envelope.event_id]
    assert history_done == [envelope.event_id]
    assert audit_calls == [envelope.event_id]  # the retry went to the failing consumer's queue only
    assert give_ups.calls == []
    assert await broker.processed("history").seen(envelope.event_id)
    for leftover in (queue, f"{queue}.retry", f"{queue}.dlq", audit_queue, f"{audit_queue}.dlq"):
        assert await broker.ready_count(leftover) == 0, leftover


async def test_poison_message_waits_in_the_delay_queue_while_the_next_event_is_handled(broker: Broker) -> None:
    poison_calls: list[float] = []
    handled: list[str] = []
    good_done = asyncio.Event()
    poison = uploaded("img-poison")
    good = uploaded("img-good")

    async def handler(envelope: events_pb2.Envelope) -> None:
        if envelope.event_id == poison.event_id:
            poison_calls.append(time.monotonic())
            raise ValueError("cannot handle this one")
        handled.append(envelope.event_id)
        good_done.set()

    # Prefetch 1 and a long backoff: had the poison message stayed in the queue (or in hand),
    # the good event behind it would wait the whole backoff.
    queue = await broker.consume("history", ["image.uploaded"], handler, prefetch=1, retry_base_seconds=30.0)
    await broker.bus.publish(poison)
    await broker.bus.publish(good)
    started = time.monotonic()
    await asyncio.wait_for(good_done.wait(), WAIT_SECONDS)
    handled_after = time.monotonic() - started
    await broker.bus.close()

    assert handled == [good.event_id]
    assert handled_after < 5.0
    assert len(poison_calls) == 1
    assert await broker.ready_count(queue) == 0
    assert await broker.ready_count(f"{queue}.dlq") == 0
    waiting = await broker.take(f"{queue}.retry")
    assert events_pb2.Envelope.FromString(waiting.body).event_id == poison.event_id
    assert waiting.headers["x-attempt"] == 2
    assert waiting.expiration == 30.0


async def test_message_that_takes_its_consumer_down_every_time_is_given_up_after_the_limit(
    broker: Broker, amqp_url: str, unique_name: str
) -> None:
    """Each life is a consumer that dies with the poison message in hand, as a killed process
    does: the handling ends without an ack or a reject, then the connection goes away."""
    poison, good = uploaded("img-poison"), uploaded("img-good")
    poison_deliveries: list[asyncio.Event] = [asyncio.Event() for _ in range(3)]
    handled: list[str] = []
    good_done = asyncio.Event()
    give_ups = GiveUps()

    async def dies_on_poison(envelope: events_pb2.Envelope) -> None:
        if envelope.event_id == poison.event_id:
            next(event for event in poison_deliveries if not event.is_set()).set()
            raise asyncio.CancelledError  # the consumer is gone, message in hand
        handled.append(envelope.event_id)
        good_done.set()

    broker.consumers.append("history")
    queue = broker.bus.queue_name("history")
    await broker.bus.declare_queue("history", ["image.uploaded"])
    await broker.bus.publish(poison)
    for life in range(2):
        bus = EventBus(amqp_url, broker.exchange, unique_name, producer=f"events-test-life-{life}")
        await bus.connect()
        await bus.consume(
            "history", ["image.uploaded"], dies_on_poison, broker.processed("history"), 1, max_unfinished_deliveries=2
        )
        await asyncio.wait_for(poison_deliveries[life].wait(), WAIT_SECONDS)
        await bus.close()

    await broker.consume(
        "history", ["image.uploaded"], dies_on_poison, max_unfinished_deliveries=2, on_give_up=give_ups
    )
    await broker.bus.publish(good)
    dead = await broker.take(f"{queue}.dlq")
    await asyncio.wait_for(good_done.wait(), WAIT_SECONDS)
    await broker.bus.close()

    assert events_pb2.Envelope.FromString(dead.body).event_id == poison.event_id
    assert dead.redelivered is False  # taken from the dead-letter queue, which got it once
    assert not poison_deliveries[2].is_set()  # the third delivery never reached the handler
    assert give_ups.calls == [
        (poison.event_id, "redelivery_limit: 2 deliveries ended without an outcome (a consumer crashed?)")
    ]
    assert handled == [good.event_id]  # the queue moved on
    assert not await broker.processed("history").seen(poison.event_id)
    assert await broker.ready_count(queue) == 0


async def test_a_delivery_that_was_handled_is_acked_on_redelivery_without_counting_against_the_limit(
    broker: Broker, amqp_url: str, unique_name: str
) -> None:
    """Killed after recording the event as handled but before the ack: the redelivery is a
    duplicate, acked at once, even with a limit of one unfinished delivery."""
    envelope, sentinel = uploaded("img-1"), uploaded("img-sentinel")
    calls: list[str] = []
    recorded = asyncio.Event()
    sentinel_done = asyncio.Event()

    class RecordThenDie(ProcessedEvents):
        async def mark(self, event_id: str) -> None:
            await super().mark(event_id)
            recorded.set()
            raise asyncio.CancelledError  # gone after recording, before the ack

    async def handler(got: events_pb2.Envelope) -> None:
        calls.append(got.event_id)
        if got.event_id == sentinel.event_id:
            sentinel_done.set()

    broker.consumers.append("history")
    await broker.bus.declare_queue("history", ["image.uploaded"])
    await broker.bus.publish(envelope)
    bus = EventBus(amqp_url, broker.exchange, unique_name, producer="events-test-dying")
    await bus.connect()
    dying = RecordThenDie(broker.database["processed_events"], "history")
    await bus.consume("history", ["image.uploaded"], handler, dying, 1, max_unfinished_deliveries=1)
    await asyncio.wait_for(recorded.wait(), WAIT_SECONDS)
    await bus.close()

    give_ups = GiveUps()
    queue = await broker.consume(
        "history", ["image.uploaded"], handler, max_unfinished_deliveries=1, on_give_up=give_ups
    )
    # Prefetch 1: the sentinel is delivered only once the redelivered message was settled.
    await broker.bus.publish(sentinel)
    await asyncio.wait_for(sentinel_done.wait(), WAIT_SECONDS)
    await broker.bus.close()

    assert calls == [envelope.event_id, sentinel.event_id]
    assert give_ups.calls == []
    assert await broker.ready_count(queue) == 0
    assert await broker.ready_count(f"{queue}.dlq") == 0


async def test_a_failing_give_up_hook_is_tried_again_later_instead_of_dead_lettering_silently(broker: Broker) -> None:
    calls: list[str] = []
    hook_calls: list[str] = []

    async def handler(envelope: events_pb2.Envelope) -> None:
        calls.append(envelope.event_id)
        raise RuntimeError("always")

    async def flaky_hook(envelope: events_pb2.Envelope, reason: str) -> None:
        hook_calls.append(reason)
        if len(hook_calls) == 1:
            raise ConnectionError("broker hiccup while telling the user")

    queue = await broker.consume(
        "history", ["image.uploaded"], handler, max_attempts=1, retry_max_seconds=0.2, on_give_up=flaky_hook
    )
    envelope = uploaded()
    await broker.bus.publish(envelope)

    dead = await broker.take(f"{queue}.dlq")
    await broker.bus.close()

    assert events_pb2.Envelope.FromString(dead.body).event_id == envelope.event_id
    assert calls == [envelope.event_id, envelope.event_id]
    assert hook_calls == ["retries_exhausted: RuntimeError", "retries_exhausted: RuntimeError"]
    assert await broker.ready_count(f"{queue}.retry") == 0


async def test_undecodable_message_is_dead_lettered_without_calling_the_handler(broker: Broker) -> None:
    calls: list[events_pb2.Envelope] = []

    async def handler(envelope: events_pb2.Envelope) -> None:
        calls.append(envelope)

    queue = await broker.consume("history", ["image.uploaded"], handler)
    channel = await broker.inspector.channel()
    exchange = await channel.get_exchange(broker.exchange)
    await exchange.publish(aio_pika.Message(body=b"\xff\xff not protobuf"), routing_key="image.uploaded")
    await channel.close()

    dead = await broker.take(f"{queue}.dlq")

    assert dead.body == b"\xff\xff not protobuf"
    assert calls == []


async def test_stop_consuming_lets_the_handler_in_hand_finish_and_takes_nothing_new(broker: Broker) -> None:
    started = asyncio.Event()
    release = asyncio.Event()
    finished: list[str] = []

    async def slow_handler(envelope: events_pb2.Envelope) -> None:
        started.set()
        await release.wait()
        finished.append(envelope.event_id)

    queue = await broker.consume("history", ["image.uploaded"], slow_handler)
    in_hand = uploaded("img-in-hand")
    await broker.bus.publish(in_hand)
    await asyncio.wait_for(started.wait(), WAIT_SECONDS)

    stopping = asyncio.create_task(broker.bus.stop_consuming(grace_seconds=WAIT_SECONDS))
    await asyncio.sleep(0.3)
    assert not stopping.done(), "stop_consuming returned while a handler was still running"
    release.set()
    await asyncio.wait_for(stopping, WAIT_SECONDS)
    later = uploaded("img-later")
    await broker.bus.publish(later)
    await broker.bus.close()

    assert finished == [in_hand.event_id]
    assert await broker.processed("history").seen(in_hand.event_id)
    # Only the event published after the stop is left: the one in hand was acked.
    assert await broker.ready_count(queue) == 1
    left = await broker.take(queue)
    assert events_pb2.Envelope.FromString(left.body).event_id == later.event_id


async def test_publish_to_a_routing_key_nobody_is_bound_to_is_fire_and_forget_without_topology(
    broker: Broker,
) -> None:
    # No topology says a consumer needs image.processing, so an unroutable one is dropped
    # by the broker and publish() returns; a queue bound later gets only later events.
    await broker.bus.publish(new_envelope("upload", image_processing=events_pb2.ImageProcessing(image_id="img-1")))

    received: list[events_pb2.Envelope] = []
    got = asyncio.Event()

    async def handler(envelope: events_pb2.Envelope) -> None:
        received.append(envelope)
        got.set()

    await broker.consume("status", ["image.processing"], handler)
    after = new_envelope("upload", image_processing=events_pb2.ImageProcessing(image_id="img-2"))
    await broker.bus.publish(after)
    await asyncio.wait_for(got.wait(), WAIT_SECONDS)

    assert [envelope.image_processing.image_id for envelope in received] == ["img-2"]


async def test_declared_topology_keeps_events_published_before_the_consumer_started(
    amqp_url: str, unique_name: str
) -> None:
    exchange = f"{unique_name}.events"
    bus = EventBus(amqp_url, exchange, unique_name, "upload", topology={"worker": ["image.uploaded"]})
    await bus.connect()
    try:
        envelope = uploaded("early")
        await bus.publish(envelope)
        connection = await aio_pika.connect_robust(amqp_url)
        async with connection:
            channel = await connection.channel()
            queue = await channel.get_queue(bus.queue_name("worker"), ensure=True)
            message = await queue.get(timeout=WAIT_SECONDS)
            await message.ack()
            assert events_pb2.Envelope.FromString(message.body).event_id == envelope.event_id
            for name in bus.consumer_queues("worker"):
                await channel.queue_delete(name)
            # With its consumer's queue gone, an event the topology requires is refused loudly...
            with pytest.raises(aio_pika.exceptions.DeliveryError):
                await bus.publish(uploaded("lost"))
            # ...while an event no consumer needs is fire-and-forget.
            await bus.publish(deleted("nobody-listens"))
            await channel.exchange_delete(exchange)
            await channel.exchange_delete(bus.dead_letter_exchange)
    finally:
        await bus.close()


def test_new_envelope_carries_exactly_one_payload_and_names_its_type() -> None:
    envelope = deleted("img-9")

    assert envelope.type == "image.deleted"
    assert envelope.WhichOneof("payload") == "image_deleted"
    assert envelope.producer == "upload"
    assert len(envelope.event_id) == 32
    assert envelope.event_id != deleted("img-9").event_id
    with pytest.raises(ValueError):
        new_envelope("upload")
    with pytest.raises(ValueError):
        new_envelope("upload", image_deleted=events_pb2.ImageDeleted(), image_processing=events_pb2.ImageProcessing())


async def test_a_handled_event_whose_record_cannot_be_written_is_acked_and_not_handled_again(broker: Broker) -> None:
    """The handler's effects are done; running it again could end differently (`make chaos`
    found an image restored, deleted by its user, then handled again and failed as missing)."""
    envelope, sentinel = uploaded("img-1"), uploaded("img-sentinel")
    calls: list[str] = []
    sentinel_done = asyncio.Event()

    class UnwritableRecord(ProcessedEvents):
        async def mark(self, event_id: str) -> None:
            raise ConnectionError("the record of handled events is unreachable")

    async def handler(got: events_pb2.Envelope) -> None:
        calls.append(got.event_id)
        if got.event_id == sentinel.event_id:
            sentinel_done.set()

    give_ups = GiveUps()
    broker.consumers.append("history")
    queue = broker.bus.queue_name("history")
    unwritable = UnwritableRecord(broker.database["processed_events"], "history")
    # One attempt only: had the failed record counted as a failed handling, it would be given up at once.
    await broker.bus.consume("history", ["image.uploaded"], handler, unwritable, 1, max_attempts=1, on_give_up=give_ups)
    await broker.bus.publish(envelope)
    await broker.bus.publish(sentinel)  # prefetch 1: delivered once the first message was settled
    await asyncio.wait_for(sentinel_done.wait(), WAIT_SECONDS)
    await broker.bus.close()

    assert calls == [envelope.event_id, sentinel.event_id]
    assert give_ups.calls == []
    for name in (queue, f"{queue}.retry", f"{queue}.dlq"):
        assert await broker.ready_count(name) == 0, name


def uploaded_for(model: str, image_id: str = "img-1") -> events_pb2.Envelope:
    return new_envelope(
        "upload",
        image_uploaded=events_pb2.ImageUploaded(
            image_id=image_id, user_id="user-1", options=events_pb2.RestorationOptions(model=model)
        ),
    )


def test_uploads_and_reprocesses_naming_a_model_are_routed_by_it_and_everything_else_by_type() -> None:
    reprocess = new_envelope(
        "upload",
        restoration_requested=events_pb2.RestorationRequested(
            image_id="img-1", restoration_id="r2", options=events_pb2.RestorationOptions(model="gfpgan")
        ),
    )
    restored = new_envelope(
        "inference",
        image_restored=events_pb2.ImageRestored(
            image_id="img-1", options=events_pb2.RestorationOptions(model="gfpgan")
        ),
    )

    assert routing_key_of(uploaded_for("codeformer")) == "image.uploaded.codeformer"
    assert routing_key_of(reprocess) == "restoration.requested.gfpgan"
    assert routing_key_of(uploaded()) == "image.uploaded"  # no options: published before options existed
    assert routing_key_of(restored) == "image.restored"  # outcomes are not routed by model
    with pytest.raises(ValueError, match="unknown restorer family"):
        routing_key_of(uploaded_for("image.#"))


def test_topic_patterns_match_as_the_broker_matches_them() -> None:
    assert topic_matches("image.uploaded.#", "image.uploaded")
    assert topic_matches("image.uploaded.#", "image.uploaded.codeformer")
    assert topic_matches("image.*", "image.uploaded")
    assert not topic_matches("image.*", "image.uploaded.gfpgan")
    assert not topic_matches("image.uploaded.gfpgan", "image.uploaded.codeformer")
    assert not topic_matches("image.uploaded", "image.uploaded.gfpgan")
    assert topic_matches("#", "user.deleted")


async def test_an_upload_for_one_model_reaches_only_that_models_queue_and_the_wildcard_consumer(
    broker: Broker,
) -> None:
    received: dict[str, list[str]] = {"codeformer": [], "classical": [], "history": []}
    history_got_all = asyncio.Event()

    def collect(name: str) -> EventHandler:
        async def handler(envelope: events_pb2.Envelope) -> None:
            received[name].append(envelope.image_uploaded.image_id)
            if name == "history" and len(received["history"]) == 3:
                history_got_all.set()

        return handler

    await broker.consume("inference.codeformer", ["image.uploaded.codeformer"], collect("codeformer"))
    await broker.consume("inference.classical", ["image.uploaded.classical"], collect("classical"))
    await broker.consume("history", ["image.uploaded.#"], collect("history"))

    await broker.bus.publish(uploaded_for("codeformer", "for-codeformer"))
    await broker.bus.publish(uploaded_for("classical", "for-classical"))
    await broker.bus.publish(uploaded("without-options"))
    await asyncio.wait_for(history_got_all.wait(), WAIT_SECONDS)
    await broker.bus.close()  # lets the handlers in hand finish; nothing else can arrive

    assert received["codeformer"] == ["for-codeformer"]
    assert received["classical"] == ["for-classical"]
    assert received["history"] == ["for-codeformer", "for-classical", "without-options"]


async def test_an_upload_for_a_model_whose_queue_is_gone_is_refused_though_a_wildcard_consumer_is_bound(
    amqp_url: str, unique_name: str
) -> None:
    """Mandatory follows the topology's patterns: the per-model key is required, because a
    binding of the topology matches it."""
    topology = {"inference.gfpgan": ["image.uploaded.gfpgan"], "history": ["image.uploaded.#"]}
    bus = EventBus(amqp_url, f"{unique_name}.events", unique_name, "upload", topology=topology)
    await bus.connect()
    connection = await aio_pika.connect_robust(amqp_url)
    try:
        async with connection:
            channel = await connection.channel()
            for name in (*bus.consumer_queues("inference.gfpgan"), *bus.consumer_queues("history")):
                await channel.queue_delete(name)
            with pytest.raises(aio_pika.exceptions.DeliveryError):
                await bus.publish(uploaded_for("gfpgan"))
            with pytest.raises(aio_pika.exceptions.DeliveryError):
                await bus.publish(uploaded())
            await bus.publish(deleted("nobody-listens"))
            await channel.exchange_delete(f"{unique_name}.events")
            await channel.exchange_delete(bus.dead_letter_exchange)
    finally:
        await bus.close()


async def test_queue_exists_tells_a_declared_queue_from_a_missing_one_without_creating_it(broker: Broker) -> None:
    broker.consumers.append("present")
    await broker.bus.declare_queue("present", ["image.uploaded"])

    assert await broker.bus.queue_exists("present")
    assert not await broker.bus.queue_exists("absent")
    assert not await broker.bus.queue_exists("absent")
