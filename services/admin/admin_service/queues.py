"""Live queue depths and consumers, from RabbitMQ itself, over AMQP: a passive queue.declare
answers with the queue's ready messages and its consumers, for any broker and with the
credentials the services already have (the management plugin's HTTP API is not required, and is
not enabled on every broker; it is not on the one-machine run's). Messages a consumer holds
unacknowledged are not in that count; Prometheus has them from the broker's own plugin."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import aio_pika
from aio_pika.abc import AbstractConnection

from facerestore_common.logging import get_logger
from facerestore_common.topology import CONSUMER_BINDINGS, LEGACY_INFERENCE_CONSUMER, embed_queue_name

log = get_logger(__name__)


@dataclass(frozen=True)
class QueueState:
    consumer: str
    queue: str
    messages: int = 0
    consumers: int = 0
    retry_messages: int = 0
    dead_letter_messages: int = 0
    available: bool = False


class QueueInspector:
    def __init__(self, amqp_url: str, queue_prefix: str, timeout_seconds: float = 3.0) -> None:
        self._url = amqp_url
        self._prefix = queue_prefix
        self._timeout = timeout_seconds
        self._connection: AbstractConnection | None = None
        self._lock = asyncio.Lock()

    async def _connect(self) -> AbstractConnection:
        async with self._lock:
            if self._connection is None or self._connection.is_closed:
                # Not a robust connection: its channels would reopen themselves after every 404.
                self._connection = await aio_pika.connect(
                    self._url, client_properties={"connection_name": "admin-queue-inspector"}
                )
            return self._connection

    async def _declared(self, connection: AbstractConnection, name: str) -> tuple[int, int] | None:
        """(ready messages, consumers) of a queue; None when it does not exist."""
        # A passive declare of a missing queue closes its channel: one channel per question.
        channel = await connection.channel()
        try:
            queue = await channel.declare_queue(name, passive=True)
            result = queue.declaration_result
            return int(result.message_count or 0), int(result.consumer_count or 0)
        except aio_pika.exceptions.ChannelClosed:
            return None
        finally:
            if not channel.is_closed:
                await channel.close()

    async def _inspect(self) -> list[QueueState]:
        connection = await self._connect()
        states = []
        for consumer in CONSUMER_BINDINGS:
            name = f"{self._prefix}.{consumer}"
            main = await self._declared(connection, name)
            retry = await self._declared(connection, f"{name}.retry")
            dead = await self._declared(connection, f"{name}.dlq")
            states.append(
                QueueState(
                    consumer,
                    name,
                    messages=main[0] if main else 0,
                    consumers=main[1] if main else 0,
                    retry_messages=retry[0] if retry else 0,
                    dead_letter_messages=dead[0] if dead else 0,
                    available=main is not None,
                )
            )
        # The single inference queue of releases before per-family queues: listed while it
        # exists, so that an operator sees it drain before deleting it.
        legacy = f"{self._prefix}.{LEGACY_INFERENCE_CONSUMER}"
        left = await self._declared(connection, legacy)
        if left is not None:
            dead = await self._declared(connection, f"{legacy}.dlq")
            retry = await self._declared(connection, f"{legacy}.retry")
            states.append(
                QueueState(
                    LEGACY_INFERENCE_CONSUMER,
                    legacy,
                    messages=left[0],
                    consumers=left[1],
                    retry_messages=retry[0] if retry else 0,
                    dead_letter_messages=dead[0] if dead else 0,
                    available=True,
                )
            )
        embed = embed_queue_name(self._prefix)
        found = await self._declared(connection, embed)
        states.append(
            QueueState(
                "embed",
                embed,
                messages=found[0] if found else 0,
                consumers=found[1] if found else 0,
                available=found is not None,
            )
        )
        return states

    async def inspect(self) -> list[QueueState]:
        """Every queue of the platform; all unavailable when the broker does not answer in time."""
        try:
            return await asyncio.wait_for(self._inspect(), self._timeout)
        except Exception as error:
            log.warning("queue_inspection_failed", error=repr(error))
            names = [(consumer, f"{self._prefix}.{consumer}") for consumer in CONSUMER_BINDINGS]
            names.append(("embed", embed_queue_name(self._prefix)))
            return [QueueState(consumer, queue) for consumer, queue in names]

    async def close(self) -> None:
        if self._connection is not None:
            await self._connection.close()
            self._connection = None
