"""The query embedding request/reply over the real broker: answers are matched to their
requests, an embedder that is missing or too slow is a 503 `embedder-unavailable` (at once
when nobody consumes the queue), and a request nobody took in time expires in the broker."""

from __future__ import annotations

import asyncio
import time

import pytest

from facerestore.inference.v1 import embedding_pb2
from facerestore_common.errors import Unavailable, Unprocessable
from history_service.embedding_client import EmbeddingClient

MODEL = "dlib-resnet-v1"


def echo(image: bytes) -> embedding_pb2.EmbedFacesResponse:
    """One face whose box and embedding are made from the request's bytes."""
    values = list(image[:4])
    return embedding_pb2.EmbedFacesResponse(
        model=MODEL,
        faces=[
            embedding_pb2.DetectedFace(
                box=values, detection_score=0.5 + len(image) / 100, embedding=[v / 255 for v in values]
            )
        ],
    )


async def test_the_embedders_model_and_faces_come_back_for_the_photo_sent(
    embedding_client: EmbeddingClient, start_responder
) -> None:
    responder = await start_responder(echo)

    result = await embedding_client.embed(b"\x0a\x14\x1e\x28photo")

    assert [request.image for request in responder.requests] == [b"\x0a\x14\x1e\x28photo"]
    assert result.model == MODEL
    (face,) = result.faces
    assert face.box == (10, 20, 30, 40)
    assert face.detection_score == pytest.approx(0.59)
    assert face.embedding == pytest.approx((10 / 255, 20 / 255, 30 / 255, 40 / 255))
    assert face.area == 20 * 20


async def test_concurrent_requests_each_get_their_own_answer(amqp_url: str, unique_name: str, start_responder) -> None:
    def slow_first(image: bytes) -> embedding_pb2.EmbedFacesResponse:
        # The first request is answered last.
        if image.startswith(b"\x01"):
            time.sleep(0.3)
        return echo(image)

    await start_responder(slow_first)
    await start_responder(slow_first)  # two workers, so that answers overtake each other
    client = EmbeddingClient(amqp_url, unique_name, timeout_seconds=5.0)
    try:
        images = [bytes([n, n + 1, n + 2, n + 3]) for n in range(1, 40, 4)]
        results = await asyncio.gather(*(client.embed(image) for image in images))
    finally:
        await client.close()

    assert [result.faces[0].box for result in results] == [tuple(image) for image in images]


async def test_no_running_embedder_is_unavailable_at_once(embedding_client: EmbeddingClient, start_responder) -> None:
    responder = await start_responder(echo)
    await responder.stop()  # the queue stays, nobody consumes it: inference scaled to zero

    started = time.monotonic()
    with pytest.raises(Unavailable) as refused:
        await embedding_client.embed(b"photo")

    assert refused.value.reason == "embedder-unavailable"
    assert time.monotonic() - started < 2.0


async def test_a_slow_embedder_is_unavailable_after_the_timeout_and_the_request_expires(
    amqp_url: str, unique_name: str, start_responder
) -> None:
    def slow(image: bytes) -> embedding_pb2.EmbedFacesResponse:
        time.sleep(1.5 if image == b"busy" else 0)
        return echo(image)

    responder = await start_responder(slow)
    busy_client = EmbeddingClient(amqp_url, unique_name, timeout_seconds=5.0)
    client = EmbeddingClient(amqp_url, unique_name, timeout_seconds=0.5)
    try:
        busy = asyncio.create_task(busy_client.embed(b"busy"))  # holds the only worker
        await asyncio.sleep(0.2)
        started = time.monotonic()
        with pytest.raises(Unavailable) as refused:
            await client.embed(b"late")
        waited = time.monotonic() - started
        assert (await busy).model == MODEL
        # The waiting request expired in the queue: the worker, free again, never got it.
        await asyncio.sleep(0.5)
        assert [request.image for request in responder.requests] == [b"busy"]
        # The client is still usable.
        assert (await client.embed(b"next")).faces[0].box == tuple(b"next")
    finally:
        await busy_client.close()
        await client.close()

    assert refused.value.reason == "embedder-unavailable"
    assert 0.5 <= waited < 1.5


async def test_a_photo_the_embedder_cannot_decode_is_unprocessable(
    embedding_client: EmbeddingClient, start_responder
) -> None:
    await start_responder(lambda image: embedding_pb2.EmbedFacesResponse(model=MODEL, error="undecodable"))

    with pytest.raises(Unprocessable) as refused:
        await embedding_client.embed(b"not an image")

    assert refused.value.reason == "undecodable-image"


async def test_an_embedder_failure_is_unavailable(embedding_client: EmbeddingClient, start_responder) -> None:
    await start_responder(lambda image: embedding_pb2.EmbedFacesResponse(model=MODEL, error="embedding_failed"))

    with pytest.raises(Unavailable) as refused:
        await embedding_client.embed(b"photo")

    assert refused.value.reason == "embedder-unavailable"


async def test_an_unreachable_broker_is_unavailable(unique_name: str) -> None:
    client = EmbeddingClient("amqp://guest:guest@127.0.0.1:1/", unique_name, timeout_seconds=1.0)

    with pytest.raises(Unavailable) as refused:
        await client.embed(b"photo")

    assert refused.value.reason == "embedder-unavailable"
    await client.close()


async def test_the_client_reconnects_after_its_connection_is_lost(
    embedding_client: EmbeddingClient, start_responder
) -> None:
    await start_responder(echo)
    assert (await embedding_client.embed(b"one!")).faces[0].box == tuple(b"one!")

    connection = embedding_client._connection
    assert connection is not None
    await connection.close()

    assert (await embedding_client.embed(b"two!")).faces[0].box == tuple(b"two!")
