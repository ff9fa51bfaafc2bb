"""GET /v1/images and GET /v1/images/{id} write their JSON from plain values, without building
the models their routes declare: the bytes must be those the models would give."""

from __future__ import annotations

import math
from datetime import UTC

from fastapi import FastAPI, Request
from pydantic import TypeAdapter

from facerestore.history.v1 import history_pb2
from gateway_service.convert import _datetime, image_fields, model_json
from gateway_service.routes.library import image_with_inline
from gateway_service.schemas import ImageOut, ImagePage
from gateway_service.settings import Settings

TOKEN = "eyJhbGciOiJIUzI1NiJ9.eyJpbWciOiJhIn0.c2lnbmF0dXJl"


def a_request() -> Request:
    app = FastAPI()
    app.state.settings = Settings(public_base_url="https://api.example.com")
    return Request({"type": "http", "app": app})


def quality(target: history_pb2.Quality, sharpness_gain: float) -> None:
    target.backend = "cpu"
    target.restorer_model = "gfpgan-1.4"
    target.analyzer_model = "buffalo_l"
    target.sharpness_before = 12.5
    target.sharpness_after = 0.0
    target.sharpness_gain = sharpness_gain
    target.identity_min = 0.8125
    target.identity_mean = 1e-7
    target.duration_ms = 812.0
    target.stage_ms["detect"] = 12.25
    target.stage_ms["restore"] = 700.0
    target.face_detection_scores.extend([0.99, 0.875])
    target.warnings.append("small-face")


def done_image() -> history_pb2.Image:
    """Every field set, with values whose JSON is easy to get wrong."""
    image = history_pb2.Image(
        id="a" * 32,
        user_id="u1",
        status="done",
        faces=2,
        tags=["beach", "2019"],
        note='Grandma 👵🏽 "at the sea"\n\\ \u2028 end',
        location="Lisbon",
        original_token=TOKEN,
        thumbnail_token=TOKEN,
        restored_token=TOKEN,
        width=640,
        height=443,
        under_review=True,
        preferred_restoration="r2",
    )
    image.created_at.FromSeconds(1_796_172_900)  # no fraction: "...:00Z"
    image.updated_at.seconds, image.updated_at.nanos = 1_796_172_901, 999_999_999  # truncated to microseconds
    quality(image.quality, math.nan)
    image.feedback.rating = 4
    image.feedback.comment = "ok"
    image.feedback.given_at.seconds = 1_796_172_999
    image.detected_faces.add(index=0, box=[1, 2, 30, 40], detection_score=0.99, identity_similarity=0.9)
    image.detected_faces.add(index=1, box=[50, 2, 80, 40], detection_score=0.875)
    first = image.restorations.add(id="r1", status="failed", error="restore-failed")
    first.options.model = "classical"
    first.created_at.seconds = 1_796_172_900
    second = image.restorations.add(id="r2", status="done", thumbnail_token=TOKEN, restored_token=TOKEN)
    second.options.model = "codeformer"
    second.options.fidelity = 0.5
    second.options.faces.extend([0, 1])
    second.options.upscale = 2
    second.created_at.seconds, second.created_at.nanos = 1_796_173_000, 664_000_000
    second.updated_at.seconds = 1_796_173_010
    quality(second.quality, math.inf)
    return image


def queued_image() -> history_pb2.Image:
    image = history_pb2.Image(id="b" * 32, user_id="u1", status="queued", original_token=TOKEN, width=10)
    image.created_at.seconds, image.created_at.nanos = 1_796_172_950, 1_000
    restoration = image.restorations.add(id="r1", status="queued")
    restoration.options.model = "classical"
    restoration.options.upscale = 1
    restoration.created_at.CopyFrom(image.created_at)
    return image


def test_a_page_is_the_json_of_its_model() -> None:
    request = a_request()
    page = {
        "items": [image_fields(image, request) for image in (done_image(), queued_image())],
        "next_cursor": "c1",
        "counts": {"queued": 1, "processing": 0, "done": 1, "failed": 0},
    }
    # What FastAPI writes for a route returning the model (response_model=ImagePage).
    expected = TypeAdapter(ImagePage).dump_json(ImagePage.model_validate(page), by_alias=True)

    response = model_json(page)

    assert response.body == expected
    assert response.media_type == "application/json"
    assert b'"sharpness_gain":null' in response.body  # NaN, as the model writes it
    assert b'"updated_at":"2026-12-02T00:55:01.999999Z"' in response.body


def test_an_empty_last_page_is_the_json_of_its_model() -> None:
    page = {"items": [], "next_cursor": None, "counts": None}
    assert model_json(page).body == TypeAdapter(ImagePage).dump_json(ImagePage.model_validate(page), by_alias=True)


def test_an_image_with_its_result_inline_is_the_json_of_its_model() -> None:
    request = a_request()
    answer = history_pb2.GetImageResponse(image=done_image(), restored_content=b"\xff\xd8\xff\xe0 jpeg")
    fields = image_with_inline(answer, request)
    expected = TypeAdapter(ImageOut).dump_json(ImageOut.model_validate(fields), by_alias=True)

    assert model_json(fields).body == expected
    assert fields["restored_base64"] == "/9j/4CBqcGVn"
    assert image_with_inline(history_pb2.GetImageResponse(image=queued_image()), request)["restored_base64"] is None


def test_timestamps_convert_as_protobuf_does() -> None:
    image = done_image()
    for stamp in (image.created_at, image.updated_at, image.restorations[1].created_at):
        assert _datetime(stamp) == stamp.ToDatetime(tzinfo=UTC)
