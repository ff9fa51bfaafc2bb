"""Embeds a query photo's faces through the inference side: request/reply over RabbitMQ.

The request goes to the durable queue `<QUEUE_PREFIX>.embed` through the default exchange,
with RabbitMQ's direct reply-to (`amq.rabbitmq.reply-to`, consumed on the same channel), a
correlation id, and a per-message expiration equal to the timeout, so that a request nobody
took in time is dropped by the broker instead of being worked on for a caller that is gone.
The publish is mandatory and confirmed: a missing queue fails at once. When no embedder
consumes the queue (inference scaled to zero without its CPU embedder), the search is
answered 503 `embedder-unavailable` at once rather than after the timeout."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractIncomingMessage

from facerestore.inference.v1 import embedding_pb2
from facerestore_common.errors import Unavailable, Unprocessable
from facerestore_common.logging import get_logger
from facerestore_common.topology import embed_queue_name

log = get_logger(__name__)

DIRECT_REPLY_TO = "amq.rabbitmq.reply-to"
# What the responder answers when the bytes are not an image.
UNDECODABLE = "undecodable"


@dataclass(frozen=True)
class EmbeddedFace:
    box: tuple[int, ...]
    detection_score: float
    embedding: tuple[float, ...]

    @property
    def area(self) -> int:
        x0, y0, x1, y1 = (*self.box, 0, 0, 0, 0)[:4]
        return max(0, x1 - x0) * max(0, y1 - y0)


@dataclass(frozen=True)
class Embedding:
    model: str
    faces: tuple[EmbeddedFace, ...]


def _unavailable(detail: str) -> Unavailable:
    return Unavailable(detail, reason="embedder-unavailable")


class EmbeddingClient:
    def __init__(self, amqp_url: str, queue_prefix: str, timeout_seconds: float) -> None:
        self._url = amqp_url
        self._queue_name = embed_queue_name(queue_prefix)
        self._timeout = timeout_seconds
        self._connection: AbstractConnection | None = None
        self._channel: AbstractChannel | None = None
        self._pending: dict[str, asyncio.Future[bytes]] = {}
        self._connect_lock = asyncio.Lock()

    @property
    def queue_name(self) -> str:
        return self._queue_name

    async def connect(self) -> None:
        """Connect now (start-up); embed() also (re)connects by itself when needed."""
        await self._ensure_channel()

    async def close(self) -> None:
        for future in self._pending.values():
            future.cancel()
        self._pending.clear()
        if self._connection is not None:
            await self._connection.close()
        self._connection = None
        self._channel = None

    async def _ensure_channel(self) -> AbstractChannel:
        async with self._connect_lock:
            if self._channel is not None and not self._channel.is_closed:
                return self._channel
            if self._connection is not None:
                await self._connection.close()
            self._connection = await aio_pika.connect(self._url, client_properties={"connection_name": "history-embed"})
            channel = await self._connection.channel(publisher_confirms=True, on_return_raises=True)
            # The responder declares it the same way (durable, no arguments), whichever starts first.
            await channel.declare_queue(self._queue_name, durable=True)
            replies = await channel.get_queue(DIRECT_REPLY_TO, ensure=False)
            await replies.consume(self._on_reply, no_ack=True)
            self._channel = channel
            return channel

    async def _on_reply(self, message: AbstractIncomingMessage) -> None:
        future = self._pending.pop(message.correlation_id or "", None)
        if future is None or future.done():
            log.info("embed_reply_unclaimed", correlation_id=message.correlation_id)
            return
        future.set_result(message.body)

    async def embed(self, image: bytes) -> Embedding:
        """Every face of the photo with its embedding; raises Unavailable (embedder-unavailable)
        when no embedder answers, Unprocessable when the embedder cannot decode the photo."""
        try:
            channel = await self._ensure_channel()
            waiting = await channel.declare_queue(self._queue_name, durable=True)
        except Exception as error:
            log.warning("embed_broker_unreachable", error=str(error))
            raise _unavailable("the face embedder cannot be reached") from error
        result = waiting.declaration_result
        if result is not None and result.consumer_count == 0:
            raise _unavailable("no face embedder is running")
        correlation_id = uuid.uuid4().hex
        future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._pending[correlation_id] = future
        try:
            try:
                await channel.default_exchange.publish(
                    aio_pika.Message(
                        body=embedding_pb2.EmbedFacesRequest(image=image).SerializeToString(),
                        content_type="application/x-protobuf",
                        correlation_id=correlation_id,
                        reply_to=DIRECT_REPLY_TO,
                        expiration=self._timeout,
                        delivery_mode=aio_pika.DeliveryMode.NOT_PERSISTENT,
                    ),
                    routing_key=self._queue_name,
                    mandatory=True,
                    timeout=self._timeout,
                )
            except Exception as error:
                log.warning("embed_request_not_delivered", queue=self._queue_name, error=str(error))
                raise _unavailable("the face embedder cannot be reached") from error
            try:
                body = await asyncio.wait_for(future, self._timeout)
            except TimeoutError:
                log.warning("embed_timeout", queue=self._queue_name, timeout_seconds=self._timeout)
                raise _unavailable(f"the face embedder did not answer within {self._timeout:g} s") from None
        finally:
            self._pending.pop(correlation_id, None)
        return _parse(body)


def _parse(body: bytes) -> Embedding:
    try:
        response = embedding_pb2.EmbedFacesResponse.FromString(body)
    except Exception as error:
        raise _unavailable("the face embedder answered with something unreadable") from error
    if response.error == UNDECODABLE:
        raise Unprocessable("the image could not be decoded", reason="undecodable-image")
    if response.error or not response.model:
        log.warning("embed_failed", error=response.error)
        raise _unavailable("the face embedder could not embed the photo")
    return Embedding(
        model=response.model,
        faces=tuple(
            EmbeddedFace(box=tuple(face.box), detection_score=face.detection_score, embedding=tuple(face.embedding))
            for face in response.faces
        ),
    )
