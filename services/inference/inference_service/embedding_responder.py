"""Answers embed requests: a caller (history's similar-face search) publishes an
EmbedFacesRequest to `<QUEUE_PREFIX>.embed` with reply_to and correlation_id; this worker
decodes the photo as the restoration pipeline does, detects and embeds every face with the
worker's analyser, and publishes an EmbedFacesResponse to reply_to.

Requests carry a per-message expiration equal to the caller's timeout, so the broker drops
those nobody waits for any more. A request is acked only after its reply is published: a
worker that dies holding one leaves it to the next worker while the caller still waits."""

from __future__ import annotations

import asyncio
import time

import aio_pika
import cv2
import numpy as np
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage, AbstractQueue, AbstractRobustConnection
from prometheus_client import Counter, Histogram

from facerestore.inference.v1 import embedding_pb2
from facerestore_common.broker_connect import connect_when_available
from facerestore_common.inflight import InFlight
from facerestore_common.logging import get_logger
from facerestore_common.startup_wait import StartupDeadline
from facerestore_common.topology import embed_queue_name
from inference_service.analysis.base import FaceAnalyzer

log = get_logger(__name__)

UNDECODABLE = "undecodable"
# Not an image problem: the analyser itself failed. The caller answers "unavailable".
EMBEDDING_FAILED = "embedding_failed"

EMBED_REQUESTS = Counter("inference_embed_requests_total", "Embed requests answered", ["outcome"])
EMBED_SECONDS = Histogram("inference_embed_seconds", "Time to decode, detect and embed one query photo")


def embed_photo(analyzer: FaceAnalyzer, content: bytes) -> embedding_pb2.EmbedFacesResponse:
    """Every face of a JPEG or PNG photo with its embedding; pure computation (run it in a thread)."""
    image = cv2.imdecode(np.frombuffer(content, dtype=np.uint8), cv2.IMREAD_COLOR) if content else None
    if image is None:
        return embedding_pb2.EmbedFacesResponse(model=analyzer.model_id, error=UNDECODABLE)
    return embedding_pb2.EmbedFacesResponse(
        model=analyzer.model_id,
        faces=[
            embedding_pb2.DetectedFace(
                box=list(face.box), detection_score=face.score, embedding=face.embedding.tolist()
            )
            for face in analyzer.analyze(image)
        ],
    )


class EmbeddingResponder:
    def __init__(
        self,
        amqp_url: str,
        queue_prefix: str,
        analyzer: FaceAnalyzer,
        prefetch: int,
        *,
        startup_deadline: StartupDeadline | None = None,
    ) -> None:
        """`startup_deadline`: until when start() waits for a broker that is not there yet."""
        self._url = amqp_url
        self._startup_deadline = startup_deadline
        self._queue_name = embed_queue_name(queue_prefix)
        self._analyzer = analyzer
        self._prefetch = prefetch
        self._connection: AbstractRobustConnection | None = None
        self._channel: AbstractChannel | None = None
        self._queue: AbstractQueue | None = None
        self._consumer_tag: str | None = None
        self._in_flight = InFlight()

    @property
    def queue_name(self) -> str:
        return self._queue_name

    # What the worker's probes ask (inference_service.probes.Consumer).
    def is_connected(self) -> bool:
        connection = self._connection
        return connection is not None and not connection.is_closed and connection.connected.is_set()

    def is_consuming(self) -> bool:
        return self._consumer_tag is not None and self._channel is not None and not self._channel.is_closed

    def oldest_held_seconds(self) -> float:
        return self._in_flight.oldest_seconds()

    async def _open_connection(self, attempt_timeout_seconds: float | None) -> AbstractRobustConnection:
        return await aio_pika.connect_robust(
            self._url, client_properties={"connection_name": "embedder"}, timeout=attempt_timeout_seconds
        )

    async def start(self) -> None:
        self._connection = await connect_when_available(
            self._open_connection, self._url, self._startup_deadline, name="embedder"
        )
        self._channel = await self._connection.channel()
        await self._channel.set_qos(prefetch_count=self._prefetch)
        # The caller declares the same queue the same way (durable, no arguments), whichever starts first.
        self._queue = await self._channel.declare_queue(self._queue_name, durable=True)
        self._consumer_tag = await self._queue.consume(self._on_message, no_ack=False)
        log.info("embed_consuming", queue=self._queue_name, prefetch=self._prefetch)

    async def stop(self, grace_seconds: float = 30.0) -> None:
        """Stop taking requests, answer those in hand, close the connection."""
        if self._queue is not None and self._consumer_tag is not None:
            try:
                await self._queue.cancel(self._consumer_tag)
            except Exception:
                log.warning("embed_cancel_failed", queue=self._queue_name, exc_info=True)
        self._consumer_tag = None
        await self._in_flight.wait(grace_seconds)
        if self._connection is not None:
            await self._connection.close()
            self._connection = None

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        # Shielded and tracked, so that a shutdown lets the requests in hand be answered.
        await asyncio.shield(self._in_flight.start(self._answer(message)))

    async def _answer(self, message: AbstractIncomingMessage) -> None:
        reply_to = message.reply_to
        if not reply_to:
            log.warning("embed_request_without_reply_to", correlation_id=message.correlation_id)
            await message.reject(requeue=False)
            return
        started = time.perf_counter()
        response = await self._embed(message.body)
        outcome = response.error or "ok"
        await self._reply(reply_to, message.correlation_id, response)
        await message.ack()
        EMBED_REQUESTS.labels(outcome).inc()
        EMBED_SECONDS.observe(time.perf_counter() - started)
        log.info(
            "embed_answered",
            correlation_id=message.correlation_id,
            faces=len(response.faces),
            outcome=outcome,
            duration_ms=round((time.perf_counter() - started) * 1000, 1),
        )

    async def _embed(self, body: bytes) -> embedding_pb2.EmbedFacesResponse:
        try:
            request = embedding_pb2.EmbedFacesRequest.FromString(body)
        except Exception:
            return embedding_pb2.EmbedFacesResponse(model=self._analyzer.model_id, error=UNDECODABLE)
        try:
            return await asyncio.to_thread(embed_photo, self._analyzer, request.image)
        except Exception:
            log.error("embed_failed", exc_info=True)
            return embedding_pb2.EmbedFacesResponse(model=self._analyzer.model_id, error=EMBEDDING_FAILED)

    async def _reply(
        self, reply_to: str, correlation_id: str | None, response: embedding_pb2.EmbedFacesResponse
    ) -> None:
        if self._channel is None:
            raise RuntimeError("EmbeddingResponder.start() was not called")
        reply = aio_pika.Message(
            body=response.SerializeToString(),
            content_type="application/x-protobuf",
            correlation_id=correlation_id,
            delivery_mode=aio_pika.DeliveryMode.NOT_PERSISTENT,
        )
        # A caller that gave up is gone with its reply-to address: the broker drops the reply.
        await self._channel.default_exchange.publish(reply, routing_key=reply_to)
