"""Uploads through the running platform: the body limit while streaming, metadata
stripped from what is stored, Idempotency-Key, the hourly quota, and nothing lost when
the broker is down at the moment of upload."""

from __future__ import annotations

import io
import select
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator

import httpx
import pytest
from PIL import Image

from tests.conftest import face_photo
from tests.e2e.test_walkthrough import bearer, wait_until_settled
from tests.stack_harness import RunningStack, random_mobile

MB = 1024 * 1024


def _request_head(stack: RunningStack, token: str, extra: str) -> bytes:
    return (
        f"POST /v1/images HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n"
        f"Content-Type: multipart/form-data; boundary=xyz\r\n{extra}\r\n"
    ).encode()


def _read_status(sock: socket.socket) -> int:
    answer = b""
    while b"\r\n" not in answer:
        chunk = sock.recv(4096)
        if not chunk:
            break
        answer += chunk
    return int(answer.split(b" ", 2)[1])


def _stream_until_answered(sock: socket.socket, chunk: bytes, limit_bytes: int) -> int:
    """Send chunks until the server answers; returns how many bytes were sent by then."""
    sent = 0
    while sent < limit_bytes:
        readable, _, _ = select.select([sock], [], [], 0)
        if readable:
            return sent
        try:
            sock.sendall(chunk)
        except (BrokenPipeError, ConnectionResetError):
            return sent
        sent += len(chunk)
    return sent


def test_declared_oversized_body_is_refused_before_it_is_sent(stack: RunningStack, client: httpx.Client) -> None:
    tokens = stack.sign_in(client, random_mobile())
    with socket.create_connection(("127.0.0.1", stack.ports["GATEWAY"]), timeout=10) as sock:
        sock.sendall(_request_head(stack, tokens["access_token"], f"Content-Length: {50 * MB}\r\n"))
        # Nothing of the 50 MB has been sent, yet the answer is already there.
        assert _read_status(sock) == 413


def test_streamed_oversized_body_is_refused_once_it_passes_the_limit(stack: RunningStack, client: httpx.Client) -> None:
    tokens = stack.sign_in(client, random_mobile())
    chunk_body = b"\0" * (64 * 1024)
    chunk = f"{len(chunk_body):x}\r\n".encode() + chunk_body + b"\r\n"
    with socket.create_connection(("127.0.0.1", stack.ports["GATEWAY"]), timeout=10) as sock:
        sock.sendall(_request_head(stack, tokens["access_token"], "Transfer-Encoding: chunked\r\n"))
        sent = _stream_until_answered(sock, chunk, limit_bytes=50 * MB)
        assert _read_status(sock) == 413
    # Refused after about the limit, not after the 50 MB the client was prepared to send
    # (socket buffers let a few MB more leave the client before it notices).
    assert sent < 10 * MB


def test_stored_original_carries_no_location_or_camera_metadata(stack: RunningStack, client: httpx.Client) -> None:
    tokens = stack.sign_in(client, random_mobile())
    photo = Image.open(face_photo("t1.jpg"))
    exif = Image.Exif()
    exif[0x010F] = "SpyCam"  # Make
    exif[0x8825] = {1: "N", 2: (52.0, 31.0, 12.0), 3: "E", 4: (13.0, 24.0, 36.0)}  # GPS IFD
    with_gps = io.BytesIO()
    photo.save(with_gps, format="JPEG", quality=90, exif=exif)
    assert b"SpyCam" in with_gps.getvalue()

    response = client.post(
        "/v1/images", headers=bearer(tokens), files={"file": ("gps.jpg", with_gps.getvalue(), "image/jpeg")}
    )
    assert response.status_code == 202, response.text
    item = wait_until_settled(client, tokens, response.json()["id"])
    stored = client.get(item["original_url"]).content
    assert b"SpyCam" not in stored
    stored_image = Image.open(io.BytesIO(stored))
    assert not stored_image.getexif() and stored_image.size == photo.size


def test_repeated_idempotency_key_returns_the_first_upload(stack: RunningStack, client: httpx.Client) -> None:
    tokens = stack.sign_in(client, random_mobile())
    photo = face_photo("Tom_Hanks_54745.png").read_bytes()
    headers = {**bearer(tokens), "Idempotency-Key": "upload-7f3a"}
    first = client.post("/v1/images", headers=headers, files={"file": ("a.png", photo, "image/png")})
    again = client.post("/v1/images", headers=headers, files={"file": ("a.png", photo, "image/png")})
    assert first.status_code == again.status_code == 202
    assert again.json()["id"] == first.json()["id"]
    wait_until_settled(client, tokens, first.json()["id"])
    assert [item["id"] for item in client.get("/v1/images", headers=bearer(tokens)).json()["items"]] == [
        first.json()["id"]
    ]


def test_eleventh_upload_within_an_hour_is_refused_with_retry_after(stack: RunningStack, client: httpx.Client) -> None:
    tokens = stack.sign_in(client, random_mobile())
    photo = face_photo("Tom_Hanks_54745.png").read_bytes()
    remaining = []
    for _ in range(10):
        response = client.post("/v1/images", headers=bearer(tokens), files={"file": ("a.png", photo, "image/png")})
        assert response.status_code == 202, response.text
        remaining.append(int(response.headers["RateLimit-Remaining"]))
    assert remaining == list(range(9, -1, -1))
    refused = client.post("/v1/images", headers=bearer(tokens), files={"file": ("a.png", photo, "image/png")})
    assert refused.status_code == 429
    assert 3500 <= int(refused.headers["Retry-After"]) <= 3600
    assert refused.json()["limit"] == "uploads-per-user"
    # Someone else can still upload.
    other = stack.sign_in(client, random_mobile())
    ok = client.post("/v1/images", headers=bearer(other), files={"file": ("a.png", photo, "image/png")})
    assert ok.status_code == 202


@pytest.fixture
def broker_stopped() -> Iterator[None]:
    rabbitmqctl = shutil.which("rabbitmqctl")
    assert rabbitmqctl, "rabbitmqctl is needed to stop and start the local broker"
    subprocess.run([rabbitmqctl, "-q", "stop_app"], check=True, timeout=120)
    try:
        yield
    finally:
        subprocess.run([rabbitmqctl, "-q", "start_app"], check=True, timeout=120)


def test_upload_made_while_the_broker_is_down_is_processed_once_it_is_back(
    stack: RunningStack, client: httpx.Client, request: pytest.FixtureRequest
) -> None:
    tokens = stack.sign_in(client, random_mobile())
    photo = face_photo("t1.jpg").read_bytes()
    request.getfixturevalue("broker_stopped")
    response = client.post("/v1/images", headers=bearer(tokens), files={"file": ("a.jpg", photo, "image/jpeg")})
    assert response.status_code == 202, response.text
    image_id = response.json()["id"]
    subprocess.run([shutil.which("rabbitmqctl") or "rabbitmqctl", "-q", "start_app"], check=True, timeout=120)

    deadline = time.monotonic() + 120
    while client.get(f"/v1/images/{image_id}", headers=bearer(tokens)).status_code == 404:
        assert time.monotonic() < deadline, "the upload never reached the history"
        time.sleep(0.5)
    item = wait_until_settled(client, tokens, image_id, timeout=120)
    assert item["status"] == "done"
    items = client.get("/v1/images", headers=bearer(tokens)).json()["items"]
    assert [entry["id"] for entry in items] == [image_id]
