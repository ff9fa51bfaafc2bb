"""The embed responder on the machine's real RabbitMQ with the real dlib analyser and real face
photos (from the insightface wheel): a caller publishes EmbedFacesRequest to `<prefix>.embed`
with RabbitMQ's direct reply-to, as history's search does, and gets every face's box and
embedding back under its correlation id. A worker started with INFERENCE_ROLES=embed answers
without ever loading a restorer or taking restoration work.

Every test gets its own queue prefix (from `unique_name`) and deletes its queue at the end."""

from __future__ import annotations

import asyncio
import os
import sys
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import aio_pika
import cv2
import dlib
import numpy as np
import pytest
from aio_pika.abc import AbstractIncomingMessage, AbstractRobustConnection

from facerestore.inference.v1 import embedding_pb2
from facerestore_common.topology import embed_queue_name
from inference_service.analysis.dlib_analyzer import DlibFaceAnalyzer
from inference_service.embedding_responder import UNDECODABLE, EmbeddingResponder
from inference_service.settings import Settings

REPLY_TO = "amq.rabbitmq.reply-to"
WAIT_SECONDS = 20.0
PhotoLoader = Callable[[str], np.ndarray]
Reply = embedding_pb2.EmbedFacesResponse


def jpeg(image: np.ndarray, quality: int = 92) -> bytes:
    ok, encoded = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert ok
    return encoded.tobytes()


class Caller:
    """The caller's side of the request/reply: consumes direct reply-to and publishes requests to
    the embed queue through the default exchange on the same channel, as RabbitMQ requires."""

    def __init__(self, connection: AbstractRobustConnection, queue: str) -> None:
        self._connection = connection
        self._queue = queue
        self._pending: dict[str, asyncio.Future[Reply]] = {}
        self.stray_replies: list[AbstractIncomingMessage] = []

    async def open(self) -> None:
        self._channel = await self._connection.channel()
        replies = await self._channel.get_queue(REPLY_TO, ensure=False)
        await replies.consume(self._on_reply, no_ack=True)

    async def _on_reply(self, message: AbstractIncomingMessage) -> None:
        future = self._pending.pop(message.correlation_id or "", None)
        if future is None:
            self.stray_replies.append(message)
        else:
            future.set_result(embedding_pb2.EmbedFacesResponse.FromString(message.body))

    async def send(
        self, body: bytes, expiration: float | None = WAIT_SECONDS
    ) -> asyncio.Future[embedding_pb2.EmbedFacesResponse]:
        correlation_id = uuid.uuid4().hex
        future: asyncio.Future[Reply] = asyncio.get_running_loop().create_future()
        self._pending[correlation_id] = future
        message = aio_pika.Message(body=body, reply_to=REPLY_TO, correlation_id=correlation_id, expiration=expiration)
        await self._channel.default_exchange.publish(message, routing_key=self._queue, mandatory=True)
        return future

    async def embed(self, image: bytes) -> embedding_pb2.EmbedFacesResponse:
        future = await self.send(embedding_pb2.EmbedFacesRequest(image=image).SerializeToString())
        return await asyncio.wait_for(future, WAIT_SECONDS)


@pytest.fixture
async def broker(amqp_url: str, unique_name: str) -> AsyncIterator[AbstractRobustConnection]:
    connection = await aio_pika.connect_robust(amqp_url)
    try:
        yield connection
    finally:
        channel = await connection.channel()
        await channel.queue_delete(embed_queue_name(unique_name))
        await connection.close()


@pytest.fixture(scope="module")
def analyzer() -> DlibFaceAnalyzer:
    analyzer = DlibFaceAnalyzer()
    analyzer.load()
    return analyzer


@pytest.fixture
async def responder(amqp_url: str, unique_name: str, analyzer: DlibFaceAnalyzer) -> AsyncIterator[EmbeddingResponder]:
    responder = EmbeddingResponder(amqp_url, unique_name, analyzer, prefetch=2)
    await responder.start()
    try:
        yield responder
    finally:
        await responder.stop(grace_seconds=10)


@pytest.fixture
async def caller(broker: AbstractRobustConnection, unique_name: str) -> Caller:
    caller = Caller(broker, embed_queue_name(unique_name))
    await caller.open()
    return caller


def detected_boxes(image_bgr: np.ndarray) -> list[tuple[int, int, int, int]]:
    """dlib's HOG detector run directly (not through the analyser): boxes left to right."""
    rects = dlib.get_frontal_face_detector()(cv2.cvtColor(image_bgr, cv2.COLOR_BGR2RGB), 1)
    return sorted((r.left(), r.top(), r.right(), r.bottom()) for r in rects)


async def test_every_face_of_the_group_photo_comes_back_with_its_box_and_a_unit_embedding(
    responder: EmbeddingResponder, caller: Caller, load_photo: PhotoLoader
) -> None:
    photo = jpeg(load_photo("t1.jpg"))
    response = await caller.embed(photo)

    assert response.error == ""
    assert response.model == DlibFaceAnalyzer.model_id
    assert [tuple(face.box) for face in response.faces] == detected_boxes(
        cv2.imdecode(np.frombuffer(photo, np.uint8), 1)
    )
    assert len(response.faces) == 6
    for face in response.faces:
        assert face.detection_score > 0
        assert len(face.embedding) == 128
        assert np.linalg.norm(face.embedding) == pytest.approx(1.0, abs=1e-4)


async def test_faces_cut_off_by_the_edges_of_the_query_photo_come_back_with_boxes_inside_it(
    responder: EmbeddingResponder, caller: Caller, cut_off_faces: tuple[np.ndarray, int, int]
) -> None:
    photo = jpeg(cut_off_faces[0])
    decoded = cv2.imdecode(np.frombuffer(photo, np.uint8), 1)
    height, width = decoded.shape[:2]
    response = await caller.embed(photo)

    direct = detected_boxes(decoded)
    assert min(box[0] for box in direct) < 0 and min(box[1] for box in direct) < 0  # past the edges
    assert max(box[2] for box in direct) > width
    boxes = [tuple(face.box) for face in response.faces]
    assert boxes == [(max(x0, 0), max(y0, 0), min(x1, width), min(y1, height)) for x0, y0, x1, y1 in direct]
    assert all(0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height for x0, y0, x1, y1 in boxes), boxes


async def test_a_mirrored_halved_crop_of_one_face_is_closest_to_that_face_of_the_group(
    responder: EmbeddingResponder, caller: Caller, load_photo: PhotoLoader
) -> None:
    group = load_photo("t1.jpg")
    everyone = await caller.embed(jpeg(group))
    vectors = np.array([face.embedding for face in everyone.faces])
    for index, face in enumerate(everyone.faces):
        x0, y0, x1, y1 = face.box
        margin = (x1 - x0) // 2
        crop = group[max(0, y0 - margin) : y1 + margin, max(0, x0 - margin) : x1 + margin]
        degraded = cv2.resize(cv2.flip(crop, 1), None, fx=0.5, fy=0.5, interpolation=cv2.INTER_AREA)
        alone = await caller.embed(jpeg(degraded, quality=50))
        assert len(alone.faces) == 1, f"face {index}: {len(alone.faces)} faces in its own crop"
        similarities = vectors @ np.array(alone.faces[0].embedding)
        assert int(np.argmax(similarities)) == index, f"face {index}: {similarities.round(3)}"


async def test_bytes_that_are_no_image_are_answered_undecodable(responder: EmbeddingResponder, caller: Caller) -> None:
    response = await caller.embed(b"%PDF-1.7 this is not a photo")

    assert response.error == UNDECODABLE
    assert list(response.faces) == []
    assert response.model == DlibFaceAnalyzer.model_id


async def test_a_body_that_is_no_request_is_answered_undecodable(responder: EmbeddingResponder, caller: Caller) -> None:
    future = await caller.send(b"\xff\xff\xff not protobuf")
    response = await asyncio.wait_for(future, WAIT_SECONDS)

    assert response.error == UNDECODABLE


async def test_a_photo_without_a_face_gets_an_empty_answer_not_an_error(
    responder: EmbeddingResponder, caller: Caller, load_photo: PhotoLoader
) -> None:
    below_the_faces = load_photo("t1.jpg")[520:, :]
    response = await caller.embed(jpeg(below_the_faces))

    assert response.error == ""
    assert list(response.faces) == []


async def test_concurrent_requests_each_get_their_own_answer(
    responder: EmbeddingResponder, caller: Caller, load_photo: PhotoLoader
) -> None:
    group, single = load_photo("t1.jpg"), load_photo("Tom_Hanks_54745.png")
    answers = await asyncio.gather(caller.embed(jpeg(group)), caller.embed(jpeg(single)), caller.embed(b"junk"))

    assert [len(answer.faces) for answer in answers] == [6, 1, 0]
    assert [answer.error for answer in answers] == ["", "", UNDECODABLE]


async def test_a_request_whose_caller_stopped_waiting_is_dropped_unanswered(
    amqp_url: str, unique_name: str, analyzer: DlibFaceAnalyzer, caller: Caller, load_photo: PhotoLoader
) -> None:
    """The caller's expiration is its timeout: a request left in the queue longer than that is
    dropped by the broker, so a worker that starts late spends nothing on it."""
    responder = EmbeddingResponder(amqp_url, unique_name, analyzer, prefetch=1)
    # Declares the queue (as the caller would) and stops consuming, leaving the queue in place.
    await responder.start()
    await responder.stop()
    request = embedding_pb2.EmbedFacesRequest(image=jpeg(load_photo("t1.jpg"))).SerializeToString()
    stale = await caller.send(request, expiration=0.2)
    await asyncio.sleep(0.5)

    responder = EmbeddingResponder(amqp_url, unique_name, analyzer, prefetch=1)
    await responder.start()
    try:
        fresh = await caller.embed(jpeg(load_photo("Tom_Hanks_54745.png")))
        assert len(fresh.faces) == 1
        assert not stale.done()
        assert caller.stray_replies == []
    finally:
        await responder.stop()


def test_roles_are_validated_and_normalised() -> None:
    assert Settings(inference_roles=" embed ,restore").roles == {"restore", "embed"}
    assert Settings().roles == {"restore", "embed"}
    assert Settings(inference_roles="embed").inference_roles == "embed"
    with pytest.raises(ValueError, match="INFERENCE_ROLES"):
        Settings(inference_roles="restore,search")
    with pytest.raises(ValueError, match="INFERENCE_ROLES"):
        Settings(inference_roles=" , ")


async def test_an_embed_only_worker_answers_without_loading_a_restorer_or_taking_restoration_work(
    amqp_url: str,
    unique_name: str,
    broker: AbstractRobustConnection,
    caller: Caller,
    tmp_path: Path,
    load_photo: PhotoLoader,
) -> None:
    """RESTORERS=gfpgan with no weights file stops a worker that loads the restorer, and the S3
    and MongoDB addresses lead nowhere: this worker runs only because it never touches them."""
    log = tmp_path / "embedder.log"
    env = {
        **os.environ,
        "INFERENCE_ROLES": "embed",
        "RESTORERS": "gfpgan",
        "FACE_ANALYZER": "dlib",
        "MODEL_DIR": str(tmp_path / "no-models-here"),
        "AMQP_URL": amqp_url,
        "QUEUE_PREFIX": unique_name,
        "EVENTS_EXCHANGE": f"{unique_name}.events",
        "S3_ENDPOINT": "127.0.0.1:1",
        "MONGO_URL": "mongodb://127.0.0.1:1",
        "METRICS_PORT": "0",
    }
    with log.open("wb") as sink:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "inference_service.main", env=env, stdout=sink, stderr=asyncio.subprocess.STDOUT
        )
    try:
        # The request may wait in the queue (declared here first) until the worker is up.
        channel = await broker.channel()
        await channel.declare_queue(embed_queue_name(unique_name), durable=True)
        future = await caller.send(
            embedding_pb2.EmbedFacesRequest(image=jpeg(load_photo("t1.jpg"))).SerializeToString(), expiration=60
        )
        exited = asyncio.ensure_future(process.wait())
        await asyncio.wait({future, exited}, timeout=60, return_when=asyncio.FIRST_COMPLETED)
        if not future.done():
            exited.cancel()
            raise AssertionError(f"no answer from the embed-only worker:\n{log.read_text()[-3000:]}")
        exited.cancel()
        response = future.result()
        assert len(response.faces) == 6
        assert process.returncode is None
        output = log.read_text()
        assert "restorer_chosen" not in output
        assert '"consuming"' not in output
        # Its restoration queue was never even declared, let alone consumed.
        with pytest.raises(aio_pika.exceptions.ChannelNotFoundEntity):
            probe = await broker.channel()
            await probe.declare_queue(f"{unique_name}.inference.gfpgan", passive=True)
    finally:
        process.terminate()
        assert await asyncio.wait_for(process.wait(), 30) == 0, log.read_text()[-3000:]
