"""SearchFaces over gRPC, as the gateway and the admin service call it: bearer tokens checked
by the same interceptors as in production, the request's oneof, filters and timestamps read
right, matches with download tokens that GetContent honours, refusals with their reasons."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from types import SimpleNamespace
from typing import Any

import cv2
import grpc
import jwt
import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

from facerestore.events.v1 import events_pb2
from facerestore.history.v1 import history_pb2, history_pb2_grpc
from facerestore_common.errors import REASON_METADATA_KEY
from facerestore_common.grpc_server import AuthInterceptor, RequestContextInterceptor
from facerestore_common.images import ImageLimits
from facerestore_common.tokens import JwksCache, TokenVerifier
from history_service.consumer import HistoryProjector
from history_service.embedding_client import EmbeddingClient
from history_service.faces import FaceRepository
from history_service.grpc_api import ACCESS_POLICY, HistoryApi
from history_service.history import History
from history_service.search import FaceSearch

ISSUER, AUDIENCE, KID = "facerestore-auth", "facerestore", "history-tests"
BASE_MS = 1_700_000_000_000
LIMITS = ImageLimits(max_bytes=1_048_576, max_pixels=40_000_000, max_side=12_000, min_side=64, jpeg_quality=92)


@pytest.fixture(scope="module")
def signing_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def bearer(key: rsa.RSAPrivateKey, user_id: str, role: str = "user") -> tuple[tuple[str, str]]:
    now = int(time.time())
    claims = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": user_id,
        "sid": f"session-{user_id}",
        "jti": uuid.uuid4().hex,
        "role": role,
        "iat": now,
        "exp": now + 600,
    }
    token = jwt.encode(claims, key, algorithm="RS256", headers={"kid": KID})
    return (("authorization", f"Bearer {token}"),)


@pytest.fixture
async def stub(
    signing_key: rsa.RSAPrivateKey,
    history: History,
    faces: FaceRepository,
    embedding_client: EmbeddingClient,
    start_responder: Callable[..., Awaitable[Any]],
    dlib_faces: Any,
) -> AsyncIterator[history_pb2_grpc.HistoryServiceStub]:
    await start_responder(dlib_faces.answer)
    jwk: dict[str, Any] = RSAAlgorithm.to_jwk(signing_key.public_key(), as_dict=True)
    document = json.dumps({"keys": [{**jwk, "kid": KID, "use": "sig", "alg": "RS256"}]})

    async def fetch() -> str:
        return document

    verifier = TokenVerifier(JwksCache(fetch, ttl_seconds=300), ISSUER, AUDIENCE, leeway_seconds=10)
    server = grpc.aio.server(interceptors=[RequestContextInterceptor(), AuthInterceptor(verifier, ACCESS_POLICY)])
    assert history.face_index is not None
    search = FaceSearch(history.items, faces, history.face_index, embedding_client, LIMITS)
    history_pb2_grpc.add_HistoryServiceServicer_to_server(HistoryApi(history, search), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    yield history_pb2_grpc.HistoryServiceStub(channel)
    await channel.close()
    await server.stop(None)


def _jpeg(image: np.ndarray, quality: int = 92) -> bytes:
    ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert ok
    return data.tobytes()


@pytest.fixture(scope="module")
def portrait(photo_bytes: Callable[[str], bytes]) -> bytes:
    """One face (the one at x 450-557) cut from the six-face photo."""
    image = cv2.imdecode(np.frombuffer(photo_bytes("t1.jpg"), dtype=np.uint8), cv2.IMREAD_COLOR)
    return _jpeg(image[230:470, 385:625])


async def add(
    project: HistoryProjector,
    events: SimpleNamespace,
    dlib_faces: Any,
    image_id: str,
    user_id: str,
    content: bytes,
    **facts: Any,
) -> tuple[events_pb2.Envelope, events_pb2.Envelope]:
    upload = events.uploaded(image_id, user_id, **facts)
    result = events.restored(image_id, user_id)
    result.image_restored.analyzer_model = dlib_faces.model_id
    for face in dlib_faces.detect(content):
        result.image_restored.face_details.add(
            box=list(face.box), detection_score=face.score, embedding=face.embedding.tolist()
        )
    await project(upload)
    await project(result)
    return upload, result


async def test_a_photo_search_answers_matches_with_facts_and_working_download_tokens(
    stub: history_pb2_grpc.HistoryServiceStub,
    signing_key: rsa.RSAPrivateKey,
    project: HistoryProjector,
    events: SimpleNamespace,
    dlib_faces: Any,
    store_renditions: Callable[..., Awaitable[dict[str, bytes]]],
    portrait: bytes,
) -> None:
    upload, result = await add(
        project,
        events,
        dlib_faces,
        "img-1",
        "alice",
        portrait,
        created_at_ms=BASE_MS,
        tags=("family",),
        location="Oslo",
    )
    stored = await store_renditions(upload, result)
    query = cv2.flip(cv2.imdecode(np.frombuffer(portrait, dtype=np.uint8), cv2.IMREAD_COLOR), 1)

    request = history_pb2.SearchFacesRequest(image=_jpeg(query, 60), top_k=5, min_score=0.5)
    request.filters.created_from.FromMilliseconds(BASE_MS)
    request.filters.created_to.FromMilliseconds(BASE_MS)
    request.filters.tags.append("family")
    request.filters.location = "Oslo"
    response = await stub.SearchFaces(request, metadata=bearer(signing_key, "alice"))

    assert response.model == "dlib-resnet-v1"
    (query_face,) = response.query_faces
    assert query_face.used and query_face.index == 0 and len(query_face.box) == 4
    (match,) = response.matches
    assert (match.image_id, match.face_index, match.user_id) == ("img-1", 0, "alice")
    assert 0.97 < match.score <= 1.0
    assert list(match.box) == list(result.image_restored.face_details[0].box)
    assert match.created_at.ToMilliseconds() == BASE_MS
    assert (list(match.tags), match.location) == (["family"], "Oslo")
    thumbnail = await stub.GetContent(history_pb2.GetContentRequest(token=match.thumbnail_token))
    restored = await stub.GetContent(history_pb2.GetContentRequest(token=match.restored_token))
    assert thumbnail.content == stored[result.image_restored.original_thumbnail_key]
    assert restored.content == stored[result.image_restored.restored_key]

    request.filters.created_from.FromMilliseconds(BASE_MS + 1)
    request.filters.created_to.FromMilliseconds(BASE_MS + 1)
    assert list((await stub.SearchFaces(request, metadata=bearer(signing_key, "alice"))).matches) == []


async def test_a_face_reference_searches_with_that_face_and_scope_all_needs_an_admin(
    stub: history_pb2_grpc.HistoryServiceStub,
    signing_key: rsa.RSAPrivateKey,
    project: HistoryProjector,
    events: SimpleNamespace,
    dlib_faces: Any,
    portrait: bytes,
) -> None:
    await add(project, events, dlib_faces, "alice-1", "alice", portrait)
    await add(project, events, dlib_faces, "bob-1", "bob", portrait)
    by_face = history_pb2.SearchFacesRequest(face=history_pb2.FaceRef(image_id="alice-1", face_index=0))

    own = await stub.SearchFaces(by_face, metadata=bearer(signing_key, "alice"))
    assert list(own.matches) == []  # the only face of hers is the query itself
    assert [(face.index, face.used) for face in own.query_faces] == [(0, True)]

    by_face.all_users = True
    everyone = await stub.SearchFaces(by_face, metadata=bearer(signing_key, "root", role="admin"))
    assert [(match.image_id, match.user_id) for match in everyone.matches] == [("bob-1", "bob")]
    assert everyone.matches[0].score == pytest.approx(1.0, abs=1e-4)

    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await stub.SearchFaces(by_face, metadata=bearer(signing_key, "alice"))
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED


@pytest.mark.parametrize(
    ("request_", "user", "code", "reason"),
    [
        (history_pb2.SearchFacesRequest(), "alice", grpc.StatusCode.INVALID_ARGUMENT, "invalid-argument"),
        (
            history_pb2.SearchFacesRequest(face=history_pb2.FaceRef(image_id="nope")),
            "alice",
            grpc.StatusCode.NOT_FOUND,
            "face-not-found",
        ),
        (
            history_pb2.SearchFacesRequest(image=_jpeg(np.full((120, 160, 3), 128, dtype=np.uint8))),
            "alice",
            grpc.StatusCode.INVALID_ARGUMENT,
            "no-face-found",
        ),
        (
            history_pb2.SearchFacesRequest(image=b"GIF89a\x01\x00\x01\x00"),
            "alice",
            grpc.StatusCode.INVALID_ARGUMENT,
            "unsupported-media-type",
        ),
        (
            history_pb2.SearchFacesRequest(face=history_pb2.FaceRef(image_id="x"), top_k=51),
            "alice",
            grpc.StatusCode.INVALID_ARGUMENT,
            "invalid-argument",
        ),
        (history_pb2.SearchFacesRequest(all_users=True), "alice", grpc.StatusCode.PERMISSION_DENIED, "forbidden"),
        (history_pb2.SearchFacesRequest(), None, grpc.StatusCode.UNAUTHENTICATED, "unauthenticated"),
    ],
    ids=["empty", "unknown-face", "no-face", "gif", "top-k", "all-users", "no-token"],
)
async def test_refusals_carry_their_status_and_reason(
    stub: history_pb2_grpc.HistoryServiceStub,
    signing_key: rsa.RSAPrivateKey,
    request_: history_pb2.SearchFacesRequest,
    user: str | None,
    code: grpc.StatusCode,
    reason: str,
) -> None:
    metadata = bearer(signing_key, user) if user else ()

    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await stub.SearchFaces(request_, metadata=metadata)

    assert refused.value.code() == code
    assert dict(refused.value.trailing_metadata() or ())[REASON_METADATA_KEY] == reason
