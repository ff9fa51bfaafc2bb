"""The event bus: one durable topic exchange, a durable queue per consuming service,
dead-lettering, publisher confirms, manual acks after side effects, and consumers
that process an event id once even when it is delivered twice.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import UTC, datetime

import aio_pika
from aio_pika.abc import AbstractIncomingMessage, AbstractRobustChannel, AbstractRobustConnection
from motor.motor_asyncio import AsyncIOMotorCollection
from opentelemetry import context as otel_context
from opentelemetry import trace
from pymongo.errors import DuplicateKeyError

from facerestore.events.v1 import events_pb2
from facerestore_common.logging import get_logger
from facerestore_common.telemetry import context_from_traceparent, current_traceparent

log = get_logger(__name__)
tracer = trace.get_tracer(__name__)

EventHandler = Callable[[events_pb2.Envelope], Awaitable[None]]


class PermanentEventError(Exception):
    """The event can never be handled; it goes to the dead-letter queue at once."""


def new_envelope(producer: str, **payload: object) -> events_pb2.Envelope:
    """Build an envelope around exactly one payload, e.g. new_envelope("upload", image_uploaded=msg)."""
    if len(payload) != 1:
        raise ValueError("an envelope carries exactly one payload")
    ((field, message),) = payload.items()
    envelope = events_pb2.Envelope(
        event_id=uuid.uuid4().hex,
        type=field.replace("_", ".", 1),
        traceparent=current_traceparent(),
        producer=producer,
    )
    envelope.occurred_at.FromDatetime(datetime.now(UTC))
    getattr(envelope, field).CopyFrom(message)
    return envelope


class ProcessedEvents:
    """Remembers which event ids a consumer has fully handled."""

    def __init__(self, collection: AsyncIOMotorCollection, consumer: str) -> None:
        self._collection = collection
        self._consumer = consumer

    def _key(self, event_id: str) -> str:
        return f"{self._consumer}:{event_id}"

    async def seen(self, event_id: str) -> bool:
        return await self._collection.find_one({"_id": self._key(event_id)}) is not None

    async def mark(self, event_id: str) -> None:
        try:
            await self._collection.insert_one(
                {"_id": self._key(event_id), "processed_at_ms": int(datetime.now(UTC).timestamp() * 1000)}
            )
        except DuplicateKeyError:
            pass


class EventBus:
    def __init__(
        self,
        amqp_url: str,
        exchange: str,
        queue_prefix: str,
        producer: str,
        topology: Mapping[str, Sequence[str]] | None = None,
    ) -> None:
        self._url = amqp_url
        self._topology = dict(topology or {})
        # Events that some consumer must get: publishing one that no queue takes is an error.
        # Other events (no consumer yet, e.g. image.deleted) are fire-and-forget.
        self._required_keys = {key for keys in self._topology.values() for key in keys}
        self._exchange_name = exchange
        self._queue_prefix = queue_prefix
        self._producer = producer
        self._connection: AbstractRobustConnection | None = None
        self._publish_channel: AbstractRobustChannel | None = None
        self._consumers: list[tuple[aio_pika.abc.AbstractQueue, str]] = []
        self._in_flight: set[asyncio.Task[None]] = set()

    @property
    def dead_letter_exchange(self) -> str:
        return f"{self._exchange_name}.dlx"

    def queue_name(self, consumer: str) -> str:
        return f"{self._queue_prefix}.{consumer}"

    async def connect(self) -> None:
        self._connection = await aio_pika.connect_robust(
            self._url, client_properties={"connection_name": self._producer}
        )
        # A mandatory message that no queue is bound to comes back from the broker:
        # publish() then raises instead of the event vanishing.
        self._publish_channel = await self._connection.channel(  # type: ignore[assignment]
            publisher_confirms=True, on_return_raises=True
        )
        await self._declare_exchanges(self._publish_channel)
        for consumer, routing_keys in self._topology.items():
            await self.declare_queue(consumer, routing_keys)

    async def _declare_exchanges(self, channel: aio_pika.abc.AbstractChannel) -> aio_pika.abc.AbstractExchange:
        await channel.declare_exchange(self.dead_letter_exchange, aio_pika.ExchangeType.DIRECT, durable=True)
        return await channel.declare_exchange(self._exchange_name, aio_pika.ExchangeType.TOPIC, durable=True)

    async def ping(self) -> bool:
        return self._connection is not None and not self._connection.is_closed

    async def publish(self, envelope: events_pb2.Envelope) -> None:
        """Publish and wait for the broker's confirm; raises if the broker did not take it."""
        if self._publish_channel is None:
            raise RuntimeError("EventBus.connect() was not called")
        exchange = await self._publish_channel.get_exchange(self._exchange_name, ensure=False)
        message = aio_pika.Message(
            body=envelope.SerializeToString(),
            content_type="application/x-protobuf",
            type=envelope.type,
            message_id=envelope.event_id,
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            headers={"traceparent": envelope.traceparent},
        )
        await exchange.publish(message, routing_key=envelope.type, mandatory=envelope.type in self._required_keys)
        log.info("event_published", event_type=envelope.type, event_id=envelope.event_id)

    def _queue_arguments(self, name: str) -> dict[str, str]:
        return {"x-dead-letter-exchange": self.dead_letter_exchange, "x-dead-letter-routing-key": name}

    async def declare_queue(self, consumer: str, routing_keys: Sequence[str]) -> aio_pika.abc.AbstractQueue:
        """Declare a consumer's durable queue, its bindings and its dead-letter queue."""
        if self._connection is None:
            raise RuntimeError("EventBus.connect() was not called")
        channel = await self._connection.channel()
        exchange = await self._declare_exchanges(channel)
        name = self.queue_name(consumer)
        dlq = await channel.declare_queue(f"{name}.dlq", durable=True)
        await dlq.bind(self.dead_letter_exchange, routing_key=name)
        queue = await channel.declare_queue(name, durable=True, arguments=self._queue_arguments(name))
        for key in routing_keys:
            await queue.bind(exchange, routing_key=key)
        await channel.close()
        return queue

    async def consume(
        self,
        consumer: str,
        routing_keys: Sequence[str],
        handler: EventHandler,
        processed: ProcessedEvents,
        prefetch: int,
    ) -> None:
        if self._connection is None:
            raise RuntimeError("EventBus.connect() was not called")
        await self.declare_queue(consumer, routing_keys)
        channel = await self._connection.channel()
        await channel.set_qos(prefetch_count=prefetch)
        # Declared (not merely looked up) on the consuming channel: after a broker restart the
        # robust channel re-declares it and resumes consuming; a looked-up queue stays silent.
        name = self.queue_name(consumer)
        queue = await channel.declare_queue(name, durable=True, arguments=self._queue_arguments(name))

        async def on_message(message: AbstractIncomingMessage) -> None:
            # Shielded and tracked, so that a shutdown lets the message in hand finish.
            task = asyncio.ensure_future(self._handle(message, handler, processed))
            self._in_flight.add(task)
            task.add_done_callback(self._in_flight.discard)
            await asyncio.shield(task)

        tag = await queue.consume(on_message, no_ack=False)
        self._consumers.append((queue, tag))
        log.info("consuming", queue=queue.name, routing_keys=list(routing_keys), prefetch=prefetch)

    async def _handle(
        self, message: AbstractIncomingMessage, handler: EventHandler, processed: ProcessedEvents
    ) -> None:
        try:
            envelope = events_pb2.Envelope.FromString(message.body)
        except Exception:
            log.error("event_undecodable", message_id=message.message_id, exc_info=True)
            await message.reject(requeue=False)
            return
        token = otel_context.attach(context_from_traceparent(envelope.traceparent))
        try:
            with tracer.start_as_current_span(f"consume {envelope.type}"):
                if await processed.seen(envelope.event_id):
                    log.info("event_duplicate_skipped", event_type=envelope.type, event_id=envelope.event_id)
                    await message.ack()
                    return
                await handler(envelope)
                await processed.mark(envelope.event_id)
                await message.ack()
        except PermanentEventError as error:
            log.error("event_dead_lettered", event_type=envelope.type, event_id=envelope.event_id, reason=str(error))
            await message.reject(requeue=False)
        except Exception:
            # Redelivered once; a second failure dead-letters it so it cannot block the queue.
            log.error(
                "event_handler_failed",
                event_type=envelope.type,
                event_id=envelope.event_id,
                redelivered=message.redelivered,
                exc_info=True,
            )
            await message.reject(requeue=not message.redelivered)
        finally:
            otel_context.detach(token)

    async def stop_consuming(self, grace_seconds: float = 30.0) -> None:
        """Stop taking new messages, then let those in hand finish (unacked ones are redelivered)."""
        for queue, tag in self._consumers:
            try:
                await queue.cancel(tag)
            except Exception:
                log.warning("consumer_cancel_failed", queue=queue.name, exc_info=True)
        self._consumers.clear()
        if self._in_flight:
            await asyncio.wait(set(self._in_flight), timeout=grace_seconds)

    async def close(self) -> None:
        await self.stop_consuming()
        if self._connection is not None:
            await self._connection.close()
            self._connection = None
