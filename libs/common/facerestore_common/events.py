"""The event bus: one durable topic exchange, a durable queue per consuming service,
publisher confirms, manual acks after side effects, and consumers that process an event
id once even when it is delivered twice.

A handler that raises is retried with exponential backoff through the consumer's own
delay queue (`<queue>.retry`): the message is published there with a per-message TTL and
an incremented `x-attempt` header, and when the TTL runs out the broker dead-letters it
back into `<queue>` only, so other consumers of the same event never see the retry. The
queue itself never waits: a failing message leaves it at once. After `max_attempts`
(or at once for a PermanentEventError) the consumer's `on_give_up` hook is told why and
the message is rejected into `<queue>.dlq`.

A message that takes its consumer down with it (a native crash, the OOM killer) is never
acked, so the broker hands it out again, to the next consumer that then dies too. Every
such redelivery is counted (in MongoDB, beside the handled event ids, before the handler
runs); once `max_unfinished_deliveries` deliveries ended that way, the next one gives up
on the message instead of handing it to the handler again.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import cast

import aio_pika
from aio_pika.abc import AbstractIncomingMessage, AbstractRobustChannel, AbstractRobustConnection
from motor.motor_asyncio import AsyncIOMotorCollection
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import SpanKind
from pamqp.common import FieldTable
from prometheus_client import Counter, Histogram
from pymongo import ReturnDocument
from pymongo.errors import DuplicateKeyError

from facerestore.events.v1 import events_pb2
from facerestore_common.broker_connect import connect_when_available
from facerestore_common.inflight import InFlight
from facerestore_common.logging import get_logger
from facerestore_common.startup_wait import StartupDeadline
from facerestore_common.telemetry import context_from_traceparent, current_traceparent
from facerestore_common.topology import RESTORER_FAMILIES, ROUTED_BY_MODEL

log = get_logger(__name__)
tracer = trace.get_tracer(__name__)

EventHandler = Callable[[events_pb2.Envelope], Awaitable[None]]
# Called once a message is given up on, before it is dead-lettered, with a reason such as
# "retries_exhausted: S3Error" or "permanent: <message>".
GiveUpHook = Callable[[events_pb2.Envelope, str], Awaitable[None]]

ATTEMPT_HEADER = "x-attempt"

EVENTS_PUBLISHED = Counter("events_published_total", "Events the broker confirmed", ["type"])
# outcome: acked (handled), retried (parked in the delay queue), dead_lettered, duplicate (already handled)
EVENTS_CONSUMED = Counter("events_consumed_total", "Deliveries by how they ended", ["queue", "outcome"])
OUTCOMES = ("acked", "retried", "dead_lettered", "duplicate")
EVENTS_HANDLING = Histogram("events_handling_seconds", "Time from a delivery to its outcome", ["queue"])


class PermanentEventError(Exception):
    """The event can never be handled; it goes to the dead-letter queue at once."""


class _DeliveryLimitReached(Exception):
    """Earlier deliveries of this message ended without an outcome too often."""


def derived_event_id(source_event_id: str, kind: str) -> str:
    """The id of the event that handling `source_event_id` produces: the same on every
    redelivery, so consumers drop the repeat a crash between publishing and acking causes."""
    return uuid.uuid5(uuid.NAMESPACE_URL, f"facerestore:{source_event_id}:{kind}").hex


def routing_key_of(envelope: events_pb2.Envelope) -> str:
    """The routing key an envelope is published with: "<type>.<model>" for an upload or a
    reprocess whose options name a restorer family (only that family's workers get it), the
    bare type for everything else (and for events published before options existed)."""
    if envelope.type in ROUTED_BY_MODEL:
        payload = envelope.WhichOneof("payload")
        model = getattr(envelope, payload).options.model if payload else ""
        if model:
            if model not in RESTORER_FAMILIES:
                # A key no worker is bound to would leave the restoration waiting forever.
                raise ValueError(f"{envelope.type} names an unknown restorer family {model!r}")
            return f"{envelope.type}.{model}"
    return envelope.type


def topic_matches(pattern: str, routing_key: str) -> bool:
    """RabbitMQ's topic rule: "*" stands for one word, "#" for zero or more."""

    def match(words: list[str], keys: list[str]) -> bool:
        if not words:
            return not keys
        head, rest = words[0], words[1:]
        if head == "#":
            return any(match(rest, keys[skip:]) for skip in range(len(keys) + 1))
        return bool(keys) and head in ("*", keys[0]) and match(rest, keys[1:])

    return match(pattern.split("."), routing_key.split("."))


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
    """Remembers which event ids a consumer has fully handled, and how often a delivery of
    one ended without an outcome (in `<collection>_redeliveries`)."""

    def __init__(self, collection: AsyncIOMotorCollection, consumer: str) -> None:
        self._collection = collection
        self._redeliveries = collection.database[f"{collection.name}_redeliveries"]
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

    async def count_redelivery(self, event_id: str) -> int:
        """Record one more redelivery of `event_id`; returns how many there have been."""
        document = await self._redeliveries.find_one_and_update(
            {"_id": self._key(event_id)},
            {"$inc": {"count": 1}},
            upsert=True,
            return_document=ReturnDocument.AFTER,
        )
        return int(document["count"])


@dataclass(frozen=True)
class _RetryPolicy:
    queue: str
    retry_queue: str
    max_attempts: int
    max_unfinished_deliveries: int
    base_seconds: float
    max_seconds: float
    on_give_up: GiveUpHook | None

    def delay_after(self, attempt: int) -> float:
        return float(min(self.base_seconds * 2 ** (attempt - 1), self.max_seconds))


def _attempt_of(message: AbstractIncomingMessage) -> int:
    """Which call of the handler this delivery is: 1 unless the delay queue sent it back."""
    value = message.headers.get(ATTEMPT_HEADER)
    if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
        return value
    return 1


class EventBus:
    def __init__(
        self,
        amqp_url: str,
        exchange: str,
        queue_prefix: str,
        producer: str,
        topology: Mapping[str, Sequence[str]] | None = None,
        *,
        robust: bool = True,
        startup_deadline: StartupDeadline | None = None,
    ) -> None:
        """`robust`: reconnect by itself after the broker went away (consumers need that). A
        publisher that reconnects on its own schedule passes False: cancelling a robust connection's
        first attempt only makes it schedule another, which a shutdown would then wait for.

        `startup_deadline`: until when connect() waits for a broker that is not there yet (the
        service's start-up deadline, STARTUP_WAIT_SECONDS); None tries once."""
        self._url = amqp_url
        self._robust = robust
        self._startup_deadline = startup_deadline
        self._topology = dict(topology or {})
        # Events that some consumer must get (a binding of the topology matches their routing
        # key): publishing one that no queue takes is an error. Other events (no consumer yet,
        # e.g. image.deleted) are fire-and-forget.
        self._bindings = {key for keys in self._topology.values() for key in keys}
        self._exchange_name = exchange
        self._queue_prefix = queue_prefix
        self._producer = producer
        self._connection: AbstractRobustConnection | None = None
        self._publish_channel: AbstractRobustChannel | None = None
        self._consumers: list[tuple[aio_pika.abc.AbstractQueue, str]] = []
        self._in_flight = InFlight()

    @property
    def dead_letter_exchange(self) -> str:
        return f"{self._exchange_name}.dlx"

    def queue_name(self, consumer: str) -> str:
        return f"{self._queue_prefix}.{consumer}"

    def consumer_queues(self, consumer: str) -> tuple[str, str, str]:
        """Every queue declare_queue() creates for a consumer: its queue, delay queue and dead-letter queue."""
        name = self.queue_name(consumer)
        return name, f"{name}.retry", f"{name}.dlq"

    async def _open_connection(self, attempt_timeout_seconds: float | None) -> AbstractRobustConnection:
        properties: FieldTable = {"connection_name": self._producer}
        if self._robust:
            return await aio_pika.connect_robust(
                self._url, client_properties=properties, timeout=attempt_timeout_seconds
            )
        # Used as the robust one is, less the reconnecting.
        plain = await aio_pika.connect(self._url, client_properties=properties, timeout=attempt_timeout_seconds)
        return cast(AbstractRobustConnection, plain)

    async def connect(self) -> None:
        """Connect, waiting until `startup_deadline` for the broker (DependencyUnavailableError
        after that), and declare the exchanges and the topology's queues. Not connected (is_connected()
        False, so probes say "not ready") until the broker accepted."""
        self._connection = await connect_when_available(
            self._open_connection, self._url, self._startup_deadline, name=self._producer
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

    def is_connected(self) -> bool:
        """Connected to the broker now (a robust connection that is reconnecting is not)."""
        connection = self._connection
        return connection is not None and not connection.is_closed and connection.connected.is_set()

    def is_consuming(self) -> bool:
        """Some consumer is registered and the channels it takes messages on are open."""
        return bool(self._consumers) and not any(queue.channel.is_closed for queue, _ in self._consumers)

    def oldest_held_seconds(self) -> float:
        """How long the oldest message in hand has been with its handler; safe from any thread."""
        return self._in_flight.oldest_seconds()

    async def ping(self) -> bool:
        return self.is_connected()

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
        routing_key = routing_key_of(envelope)
        mandatory = any(topic_matches(binding, routing_key) for binding in self._bindings)
        with tracer.start_as_current_span(f"publish {envelope.type}", kind=SpanKind.PRODUCER):
            await exchange.publish(message, routing_key=routing_key, mandatory=mandatory)
        EVENTS_PUBLISHED.labels(envelope.type).inc()
        log.info("event_published", event_type=envelope.type, event_id=envelope.event_id, routing_key=routing_key)

    def _queue_arguments(self, name: str) -> dict[str, str]:
        return {"x-dead-letter-exchange": self.dead_letter_exchange, "x-dead-letter-routing-key": name}

    @staticmethod
    def _retry_queue_arguments(name: str) -> dict[str, str]:
        # Nothing consumes the delay queue: a message waits out its own TTL, then the broker
        # dead-letters it through the default exchange straight back into the consumer's queue.
        return {"x-dead-letter-exchange": "", "x-dead-letter-routing-key": name}

    async def queue_exists(self, consumer: str) -> bool:
        """Whether the consumer's queue is on the broker, without creating it."""
        if self._connection is None:
            raise RuntimeError("EventBus.connect() was not called")
        # A passive declare of a missing queue closes its channel: use one of its own.
        channel = await self._connection.channel()
        try:
            await channel.declare_queue(self.queue_name(consumer), passive=True)
        except aio_pika.exceptions.ChannelClosed:
            return False
        await channel.close()
        return True

    async def declare_queue(self, consumer: str, routing_keys: Sequence[str]) -> aio_pika.abc.AbstractQueue:
        """Declare a consumer's durable queue, its bindings, its delay queue and its dead-letter queue."""
        if self._connection is None:
            raise RuntimeError("EventBus.connect() was not called")
        channel = await self._connection.channel()
        exchange = await self._declare_exchanges(channel)
        name, retry_name, dlq_name = self.consumer_queues(consumer)
        dlq = await channel.declare_queue(dlq_name, durable=True)
        await dlq.bind(self.dead_letter_exchange, routing_key=name)
        await channel.declare_queue(retry_name, durable=True, arguments=self._retry_queue_arguments(name))
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
        *,
        max_attempts: int = 3,
        retry_base_seconds: float = 1.0,
        retry_max_seconds: float = 60.0,
        max_unfinished_deliveries: int = 5,
        on_give_up: GiveUpHook | None = None,
    ) -> None:
        """Deliver the consumer's events to `handler`; ack after it returns.

        A handler that raises is called again after retry_base_seconds * 2**(attempt - 1)
        (at most retry_max_seconds), up to max_attempts calls in all; then, or at once for a
        PermanentEventError, on_give_up(envelope, reason) runs and the message is dead-lettered.
        The same happens, without calling the handler, to a message redelivered after
        max_unfinished_deliveries deliveries that ended without an ack or a reject.
        """
        if self._connection is None:
            raise RuntimeError("EventBus.connect() was not called")
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if max_unfinished_deliveries < 1:
            raise ValueError("max_unfinished_deliveries must be at least 1")
        await self.declare_queue(consumer, routing_keys)
        channel = await self._connection.channel()
        await channel.set_qos(prefetch_count=prefetch)
        # Declared (not merely looked up) on the consuming channel: after a broker restart the
        # robust channel re-declares them and resumes consuming; a looked-up queue stays silent.
        name, retry_name, _ = self.consumer_queues(consumer)
        for outcome in OUTCOMES:  # every outcome's series exists from the start, at 0
            EVENTS_CONSUMED.labels(name, outcome)
        await channel.declare_queue(retry_name, durable=True, arguments=self._retry_queue_arguments(name))
        queue = await channel.declare_queue(name, durable=True, arguments=self._queue_arguments(name))
        policy = _RetryPolicy(
            name, retry_name, max_attempts, max_unfinished_deliveries, retry_base_seconds, retry_max_seconds, on_give_up
        )

        async def on_message(message: AbstractIncomingMessage) -> None:
            # Shielded and tracked, so that a shutdown lets the message in hand finish.
            await asyncio.shield(self._in_flight.start(self._handle(message, handler, processed, policy)))

        tag = await queue.consume(on_message, no_ack=False)
        self._consumers.append((queue, tag))
        log.info(
            "consuming", queue=queue.name, routing_keys=list(routing_keys), prefetch=prefetch, max_attempts=max_attempts
        )

    async def _handle(
        self,
        message: AbstractIncomingMessage,
        handler: EventHandler,
        processed: ProcessedEvents,
        policy: _RetryPolicy,
    ) -> None:
        try:
            envelope = events_pb2.Envelope.FromString(message.body)
        except Exception:
            log.error("event_undecodable", message_id=message.message_id, exc_info=True)
            await message.reject(requeue=False)
            EVENTS_CONSUMED.labels(policy.queue, "dead_lettered").inc()
            return
        attempt = _attempt_of(message)
        token = otel_context.attach(context_from_traceparent(envelope.traceparent))
        started = time.perf_counter()
        try:
            with tracer.start_as_current_span(f"consume {envelope.type}", kind=SpanKind.CONSUMER):
                try:
                    duplicate = await processed.seen(envelope.event_id)
                    if duplicate:
                        log.info("event_duplicate_skipped", event_type=envelope.type, event_id=envelope.event_id)
                    else:
                        if message.redelivered:
                            await self._count_unfinished_delivery(envelope, processed, policy)
                        await handler(envelope)
                        await self._record_handled(envelope, processed)
                except _DeliveryLimitReached as error:
                    await self._give_up(message, envelope, attempt, f"redelivery_limit: {error}", policy)
                except PermanentEventError as error:
                    log.error(
                        "event_failed_permanently",
                        event_type=envelope.type,
                        event_id=envelope.event_id,
                        reason=str(error),
                    )
                    await self._give_up(message, envelope, attempt, f"permanent: {error}", policy)
                except Exception as error:
                    # Also when the record of handled ids cannot be read: handlers are
                    # idempotent, so running one again is safe.
                    log.error(
                        "event_handler_failed",
                        event_type=envelope.type,
                        event_id=envelope.event_id,
                        attempt=attempt,
                        max_attempts=policy.max_attempts,
                        exc_info=True,
                    )
                    if attempt < policy.max_attempts:
                        await self._retry_later(message, envelope, attempt + 1, policy.delay_after(attempt), policy)
                    else:
                        reason = f"retries_exhausted: {type(error).__name__}"
                        await self._give_up(message, envelope, attempt, reason, policy)
                else:
                    await message.ack()
                    EVENTS_CONSUMED.labels(policy.queue, "duplicate" if duplicate else "acked").inc()
        finally:
            EVENTS_HANDLING.labels(policy.queue).observe(time.perf_counter() - started)
            otel_context.detach(token)

    @staticmethod
    async def _record_handled(envelope: events_pb2.Envelope, processed: ProcessedEvents) -> None:
        """Remember the event as handled. If that record cannot be written, the message is acked
        all the same: the handler's effects are done, and running it again could end differently
        (`make chaos` found an image restored, then deleted by its user, then handled again and
        failed as missing). Only if the ack is lost as well does the broker deliver it again."""
        try:
            await processed.mark(envelope.event_id)
        except Exception:
            log.warning("event_handled_unrecorded", event_type=envelope.type, event_id=envelope.event_id, exc_info=True)

    @staticmethod
    async def _count_unfinished_delivery(
        envelope: events_pb2.Envelope, processed: ProcessedEvents, policy: _RetryPolicy
    ) -> None:
        """Count a redelivery (it follows a delivery that ended without an outcome) before
        the handler runs, so that even a crash in the handler leaves the count behind."""
        unfinished = await processed.count_redelivery(envelope.event_id)
        log.warning(
            "event_redelivered",
            event_type=envelope.type,
            event_id=envelope.event_id,
            unfinished_deliveries=unfinished,
            max_unfinished_deliveries=policy.max_unfinished_deliveries,
        )
        if unfinished >= policy.max_unfinished_deliveries:
            raise _DeliveryLimitReached(f"{unfinished} deliveries ended without an outcome (a consumer crashed?)")

    async def _retry_later(
        self,
        message: AbstractIncomingMessage,
        envelope: events_pb2.Envelope,
        next_attempt: int,
        delay: float,
        policy: _RetryPolicy,
    ) -> None:
        """Park a copy in the delay queue (confirmed by the broker), then ack the original."""
        if self._publish_channel is None:
            raise RuntimeError("EventBus.connect() was not called")
        headers = dict(message.headers)
        headers[ATTEMPT_HEADER] = next_attempt
        retry = aio_pika.Message(
            body=message.body,
            content_type=message.content_type,
            type=message.type,
            message_id=message.message_id,
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            headers=headers,
            expiration=delay,
        )
        try:
            # Mandatory: should the delay queue be missing, the publish raises instead of the
            # copy vanishing while the original is acked.
            await self._publish_channel.default_exchange.publish(retry, routing_key=policy.retry_queue, mandatory=True)
        except Exception:
            # The broker did not take the copy: keep the original, back off here, and put it
            # back in the queue (a closed channel returns it to the queue by itself).
            log.error("event_retry_publish_failed", event_id=envelope.event_id, exc_info=True)
            await asyncio.sleep(delay)
            await message.nack(requeue=True)
            EVENTS_CONSUMED.labels(policy.queue, "retried").inc()
            return
        await message.ack()
        EVENTS_CONSUMED.labels(policy.queue, "retried").inc()
        log.info(
            "event_retry_scheduled",
            event_type=envelope.type,
            event_id=envelope.event_id,
            next_attempt=next_attempt,
            delay_seconds=delay,
        )

    async def _give_up(
        self,
        message: AbstractIncomingMessage,
        envelope: events_pb2.Envelope,
        attempt: int,
        reason: str,
        policy: _RetryPolicy,
    ) -> None:
        if policy.on_give_up is not None:
            try:
                await policy.on_give_up(envelope, reason)
            except Exception:
                # Whoever waits on the outcome has not been told: try the whole thing again
                # later, at the same attempt, instead of dead-lettering silently.
                log.error("event_give_up_hook_failed", event_id=envelope.event_id, reason=reason, exc_info=True)
                await self._retry_later(message, envelope, attempt, policy.max_seconds, policy)
                return
        log.error("event_dead_lettered", event_type=envelope.type, event_id=envelope.event_id, reason=reason)
        await message.reject(requeue=False)
        EVENTS_CONSUMED.labels(policy.queue, "dead_lettered").inc()

    async def stop_consuming(self, grace_seconds: float = 30.0) -> None:
        """Stop taking new messages, then let those in hand finish (unacked ones are redelivered)."""
        for queue, tag in self._consumers:
            try:
                await queue.cancel(tag)
            except Exception:
                log.warning("consumer_cancel_failed", queue=queue.name, exc_info=True)
        self._consumers.clear()
        await self._in_flight.wait(grace_seconds)

    async def close(self) -> None:
        await self.stop_consuming()
        if self._connection is not None:
            await self._connection.close()
            self._connection = None
