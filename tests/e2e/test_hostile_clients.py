"""The running platform against clients that do not play by the rules: forged download links,
a Host header that names another site, oversized and slow bodies, slow headers, chosen request
ids, refused uploads that should not cost quota; and the headers every answer must carry."""

from __future__ import annotations

import base64
import hashlib
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from html.parser import HTMLParser
from typing import Any

import httpx
import jwt
import pytest
from playwright.sync_api import Route, sync_playwright
from pydantic import SecretStr

from history_service.settings import Settings as HistorySettings
from tests.conftest import face_photo
from tests.e2e.test_walkthrough import bearer
from tests.stack_harness import ROOT, RunningStack, free_ports, random_mobile

# The gateway's defaults (settings.py): headers, then a body, each within 10 s; JSON bodies up to 64 KB.
HEADER_READ_TIMEOUT = 10.0
BODY_READ_TIMEOUT = 10.0
MAX_JSON_BODY = 64 * 1024
PHOTO = face_photo("Tom_Hanks_54745.png").read_bytes()


def upload(client: httpx.Client, tokens: dict[str, str], **headers: str) -> httpx.Response:
    return client.post(
        "/v1/images", headers={**bearer(tokens), **headers}, files={"file": ("face.png", PHOTO, "image/png")}
    )


@pytest.fixture(scope="module")
def owner(stack: RunningStack) -> dict[str, str]:
    with httpx.Client(base_url=stack.base_url, timeout=30) as client:
        return stack.sign_in(client, random_mobile())


@pytest.fixture(scope="module")
def image_id(stack: RunningStack, owner: dict[str, str]) -> str:
    with httpx.Client(base_url=stack.base_url, timeout=30) as client:
        response = upload(client, owner)
    assert response.status_code == 202, response.text
    return str(response.json()["id"])


# --- download links ---------------------------------------------------------------------------


def _download_claims(url: str) -> tuple[str, dict[str, Any]]:
    token = url.rsplit("/", 1)[1]
    return token, jwt.decode(token, options={"verify_signature": False})


def test_a_download_link_without_an_expiry_is_refused(
    stack: RunningStack, client: httpx.Client, owner: dict[str, str], image_id: str
) -> None:
    image = client.get(f"/v1/images/{image_id}", headers=bearer(owner)).json()
    token, claims = _download_claims(image["original_url"])
    assert {"exp", "iat", "aud", "img", "kind"} <= set(claims) and claims["img"] == image_id
    # The local stack signs links with the development secret; a holder of it forges links.
    secret = HistorySettings().download_token_secret.get_secret_value()
    with_expiry = jwt.encode(claims, secret, algorithm="HS256")
    forever = jwt.encode({key: value for key, value in claims.items() if key != "exp"}, secret, algorithm="HS256")
    no_kind = jwt.encode({key: value for key, value in claims.items() if key != "kind"}, secret, algorithm="HS256")

    assert client.get(f"/v1/files/{token}").status_code == 200
    assert client.get(f"/v1/files/{with_expiry}").status_code == 200
    for forged in (forever, no_kind):
        refused = client.get(f"/v1/files/{forged}")
        assert refused.status_code == 404 and refused.json()["type"].endswith("/not-found")


def test_history_refuses_to_start_in_production_with_the_development_download_secret() -> None:
    # Every other secret set to a real value, so that the download secret is what is refused.
    env = {key: value for key, value in os.environ.items() if key != "DOWNLOAD_TOKEN_SECRET"}
    for name, field in HistorySettings.model_fields.items():
        if isinstance(field.default, SecretStr) and name != "download_token_secret":
            env[name.upper()] = f"a-real-{name}-0123456789abcdef"
    env["ENVIRONMENT"] = "production"
    started = subprocess.run(
        [sys.executable, "-m", "history_service.main"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert started.returncode != 0
    assert "DOWNLOAD_TOKEN_SECRET must be set to a real secret when ENVIRONMENT=production" in started.stderr


# --- links and HSTS from the configured public address ------------------------------------------


def test_links_are_built_from_the_public_base_url_whatever_the_host_header(
    stack: RunningStack, client: httpx.Client, owner: dict[str, str], image_id: str
) -> None:
    spoofed = {**bearer(owner), "Host": "evil.example", "X-Forwarded-Host": "evil.example"}
    one = client.get(f"/v1/images/{image_id}", headers=spoofed)
    page = client.get("/v1/images", headers=spoofed)

    assert one.status_code == page.status_code == 200
    urls = [one.json()["original_url"], *(item["original_url"] for item in page.json()["items"])]
    assert all(url.startswith(f"{stack.base_url}/v1/files/") for url in urls), urls
    # Served over http here: no HSTS.
    assert "strict-transport-security" not in one.headers


@pytest.fixture
def https_gateway(stack: RunningStack) -> Iterator[str]:
    """A second gateway replica of the running platform, configured as served at an https address."""
    port, metrics_port = free_ports(2)
    env = stack.environment()
    env.update(
        AUTH_GRPC_TARGET=f"127.0.0.1:{stack.ports['AUTH']}",
        UPLOAD_GRPC_TARGET=f"127.0.0.1:{stack.ports['UPLOAD']}",
        HISTORY_GRPC_TARGET=f"127.0.0.1:{stack.ports['HISTORY']}",
        ADMIN_GRPC_TARGET=f"127.0.0.1:{stack.ports['ADMIN']}",
        HTTP_PORT=str(port),
        METRICS_PORT=str(metrics_port),
        PUBLIC_BASE_URL="https://photos.example.test",
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "gateway_service.main"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, "the second gateway exited"
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "the second gateway did not start"
            time.sleep(0.2)
        yield base
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_a_gateway_served_over_https_links_to_its_public_address_and_sends_hsts(
    https_gateway: str, owner: dict[str, str], image_id: str
) -> None:
    with httpx.Client(base_url=https_gateway, timeout=30) as client:
        image = client.get(f"/v1/images/{image_id}", headers={**bearer(owner), "Host": "evil.example"})
        probe = client.get("/healthz")

    assert image.status_code == 200
    assert image.json()["original_url"].startswith("https://photos.example.test/v1/files/")
    for response in (image, probe):
        assert response.headers["strict-transport-security"] == "max-age=31536000; includeSubDomains"


# --- bodies: size ---------------------------------------------------------------------------------


def _read_answer(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:] if ": " in line)
    headers = {name.lower(): value for name, value in headers.items()}
    length = int(headers.get("content-length", "0"))
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return int(lines[0].split(" ")[1]), headers, body


def test_a_declared_50_mb_refresh_body_is_refused_before_it_is_sent(stack: RunningStack) -> None:
    with socket.create_connection(("127.0.0.1", stack.ports["GATEWAY"]), timeout=10) as sock:
        sock.sendall(
            b"POST /v1/auth/refresh HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"Content-Length: 52428800\r\n\r\n"
        )
        started = time.monotonic()
        status, headers, body = _read_answer(sock)

    assert status == 413 and time.monotonic() - started < 5
    assert headers["content-type"] == "application/problem+json"
    assert b"/payload-too-large" in body


def test_a_streamed_refresh_body_is_cut_off_once_it_passes_the_limit(stack: RunningStack) -> None:
    """50 MB of JSON sent in chunks (no length declared): refused as soon as it passes 64 KB."""
    chunk = b"4000\r\n" + b" " * 0x4000 + b"\r\n"
    with socket.create_connection(("127.0.0.1", stack.ports["GATEWAY"]), timeout=10) as sock:
        sock.sendall(
            b"POST /v1/auth/refresh HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n"
        )
        sent = 0
        sock.setblocking(False)
        answer = b""
        while sent < 50 * 1024 * 1024 and not answer:
            try:
                answer = sock.recv(65536)
            except BlockingIOError:
                try:
                    sent += sock.send(chunk)
                except BlockingIOError:
                    time.sleep(0.005)
                except (BrokenPipeError, ConnectionResetError):
                    break
        sock.setblocking(True)
        status = int((answer or sock.recv(65536)).split(b" ", 2)[1])

    assert status == 413
    # The socket buffers hold some of what was sent; far from the 50 MB, and not read past the limit.
    assert sent < 8 * 1024 * 1024, sent


def test_json_bodies_over_64_kb_are_refused_and_smaller_ones_are_read(client: httpx.Client) -> None:
    padding = " " * (MAX_JSON_BODY + 1)
    too_large = client.post(
        "/v1/auth/otp", content=f'{{"phone": "+4915112345678"{padding}}}', headers={"Content-Type": "application/json"}
    )
    fits = client.post("/v1/auth/refresh", json={"refresh_token": "x" * (MAX_JSON_BODY // 2)})

    assert too_large.status_code == 413 and too_large.json()["type"].endswith("/payload-too-large")
    assert too_large.headers["x-content-type-options"] == "nosniff" and too_large.headers["x-request-id"]
    # Read and answered on its merits (no such refresh token).
    assert fits.status_code in (401, 422), fits.text


# --- slow clients ----------------------------------------------------------------------------------


class _SlowClient(threading.Thread):
    """Sends `parts` one every `interval` seconds after `head`; records the answer and when it came."""

    def __init__(self, port: int, head: bytes, parts: list[bytes], interval: float) -> None:
        super().__init__(daemon=True)
        self.port, self.head, self.parts, self.interval = port, head, parts, interval
        self.answer = b""
        self.seconds = 0.0

    def run(self) -> None:
        started = time.monotonic()
        with socket.create_connection(("127.0.0.1", self.port), timeout=60) as sock:
            sock.sendall(self.head)
            sock.settimeout(self.interval)
            for part in self.parts:
                try:
                    self.answer = sock.recv(65536)
                except TimeoutError:
                    pass
                else:
                    break
                try:
                    sock.sendall(part)
                except (BrokenPipeError, ConnectionResetError):
                    break
            sock.settimeout(30)
            while not self.answer:
                try:
                    self.answer = sock.recv(65536) or b"(closed)"
                except (TimeoutError, ConnectionResetError):
                    self.answer = b"(closed)"
            self.seconds = time.monotonic() - started
            # The rest of the answer, up to the close that follows it.
            sock.settimeout(5)
            while True:
                try:
                    more = sock.recv(65536)
                except (TimeoutError, ConnectionResetError):
                    break
                if not more:
                    break
                self.answer += more


def test_slow_headers_idle_connections_and_dribbled_uploads_are_cut_off(
    stack: RunningStack, client: httpx.Client
) -> None:
    port = stack.ports["GATEWAY"]
    tokens = stack.sign_in(client, random_mobile())
    request_line = b"GET /v1/me HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer " + tokens["access_token"].encode()
    # One byte a second, for far longer than the header deadline.
    slow_headers = _SlowClient(port, b"G", [bytes([byte]) for byte in request_line[1:]], 1.0)
    # Connects, then says nothing.
    idle = _SlowClient(port, b"", [b""] * 60, 1.0)
    # A 100 KB upload, 5 KB a second over 20 s.
    boundary = "dribble"
    body = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="a.png"\r\n'
        f"Content-Type: image/png\r\n\r\n".encode()
        + PHOTO[: 100 * 1024].ljust(100 * 1024, b"\0")
        + f"\r\n--{boundary}--\r\n".encode()
    )
    head = (
        f"POST /v1/images HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {tokens['access_token']}\r\n"
        f"Content-Type: multipart/form-data; boundary={boundary}\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()
    dribble = _SlowClient(port, head, [body[offset : offset + 5120] for offset in range(0, len(body), 5120)], 1.0)
    for slow in (slow_headers, idle, dribble):
        slow.start()
    for slow in (slow_headers, idle, dribble):
        slow.join(timeout=60)

    assert slow_headers.answer.startswith(b"HTTP/1.1 408"), slow_headers.answer
    assert idle.answer.startswith(b"HTTP/1.1 408"), idle.answer
    for cut in (slow_headers, idle):
        assert HEADER_READ_TIMEOUT - 1 <= cut.seconds <= HEADER_READ_TIMEOUT + 5, cut.seconds
    assert dribble.answer.startswith(b"HTTP/1.1 408"), dribble.answer
    assert b"/request-timeout" in dribble.answer
    assert BODY_READ_TIMEOUT - 1 <= dribble.seconds <= BODY_READ_TIMEOUT + 5, dribble.seconds
    # Nothing of it was stored.
    assert client.get("/v1/images", headers=bearer(tokens)).json()["items"] == []


# --- headers ----------------------------------------------------------------------------------------


class _PageAssets(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []
        self.inline_scripts: list[str] = []
        self._in_inline_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        url = values.get("src") or (values.get("href") if tag == "link" else None)
        if url:
            self.urls.append(url)
        self._in_inline_script = tag == "script" and "src" not in values

    def handle_data(self, data: str) -> None:
        if self._in_inline_script:
            self.inline_scripts.append(data)

    def handle_endtag(self, tag: str) -> None:
        self._in_inline_script = False


def test_docs_load_everything_from_the_gateway_under_a_strict_policy(client: httpx.Client) -> None:
    for page_path, asset in (("/docs", "swagger-ui-bundle.js"), ("/redoc", "redoc.standalone.js")):
        page = client.get(page_path)
        assert page.status_code == 200
        policy = page.headers["content-security-policy"]
        assert "frame-ancestors 'none'" in policy and "default-src 'none'" in policy
        parser = _PageAssets()
        parser.feed(page.text)
        # Nothing from another site: every file is this gateway's own, and is there.
        assert parser.urls and all(url.startswith("/docs/assets/") for url in parser.urls), parser.urls
        assert any(url.endswith(asset) for url in parser.urls)
        for url in parser.urls:
            served = client.get(url)
            assert served.status_code == 200 and len(served.content) > 0, url
            assert served.headers["x-content-type-options"] == "nosniff"
        # The page's own start-up script is allowed by its hash, and nothing inline besides.
        script_sources = re.search(r"script-src ([^;]+)", policy)
        assert script_sources is not None
        for script in parser.inline_scripts:
            digest = base64.b64encode(hashlib.sha256(script.encode()).digest()).decode()
            assert f"'sha256-{digest}'" in script_sources.group(1)
        assert "'unsafe-inline'" not in script_sources.group(1)
    assert client.get("/docs/assets/swagger-ui-bundle.js").headers["content-type"].startswith("text/javascript")
    assert client.get("/openapi.json").status_code == 200


def test_swagger_ui_renders_offline_in_a_browser_under_its_policy(stack: RunningStack) -> None:
    """Debian's chromium, driven by Playwright, with every request to another site refused."""
    chromium = shutil.which("chromium") or "/usr/bin/chromium"
    problems: list[str] = []
    elsewhere: list[str] = []
    with sync_playwright() as driver:
        browser = driver.chromium.launch(executable_path=chromium)
        try:
            page = browser.new_page()
            page.on("pageerror", lambda error: problems.append(f"script error: {error}"))
            page.on("console", lambda message: problems.append(message.text) if message.type == "error" else None)

            def only_the_gateway(route: Route) -> None:
                if route.request.url.startswith(stack.base_url):
                    route.continue_()
                else:
                    elsewhere.append(route.request.url)
                    route.abort()

            page.route("**/*", only_the_gateway)
            page.goto(f"{stack.base_url}/docs")
            page.wait_for_selector(".opblock", timeout=30_000)
            operations = page.locator(".opblock").count()
        finally:
            browser.close()

    # Every operation of the document is listed, with nothing fetched from elsewhere and nothing
    # the page's Content-Security-Policy had to block.
    assert operations >= 20
    assert elsewhere == [] and problems == []


def test_every_answer_says_nosniff_and_none_names_the_server(
    stack: RunningStack, client: httpx.Client, owner: dict[str, str], image_id: str
) -> None:
    image = client.get(f"/v1/images/{image_id}", headers=bearer(owner))
    answers = [
        client.get("/healthz"),
        client.get("/readyz"),
        client.get("/openapi.json"),
        client.get("/docs"),
        image,
        client.get("/v1/images", headers=bearer(owner)),
        client.get(image.json()["original_url"]),
        client.get("/v1/me"),
        client.get("/v1/no-such-route"),
        client.post("/v1/auth/refresh", json={}),
        client.post("/v1/auth/refresh", content=b"{", headers={"Content-Type": "application/json"}),
    ]
    for response in answers:
        assert response.headers.get("x-content-type-options") == "nosniff", response.url
        assert "server" not in response.headers, response.url
    # API answers are not stored by caches unless a route says so (downloads may be kept a minute).
    assert image.headers["cache-control"] == "no-store"
    assert answers[6].headers["cache-control"] == "private, max-age=60"


def test_token_answers_are_never_stored(stack: RunningStack, client: httpx.Client) -> None:
    phone = random_mobile()
    assert client.post("/v1/auth/otp", json={"phone": phone}).status_code == 202
    verified = client.post("/v1/auth/otp/verify", json={"phone": phone, "code": stack.latest_code(phone)})
    refreshed = client.post("/v1/auth/refresh", json={"refresh_token": verified.json()["refresh_token"]})

    for response in (verified, refreshed):
        assert response.status_code == 200 and "access_token" in response.json()
        assert response.headers["cache-control"] == "no-store"


def test_a_request_id_is_kept_only_when_it_is_a_safe_token(client: httpx.Client) -> None:
    kept = client.get("/v1/no-such-route", headers={"X-Request-ID": "client.Req-42_a"})
    assert kept.headers["x-request-id"] == "client.Req-42_a" == kept.json()["request_id"]

    for hostile in ("attacker-chosen-id-<script>", "a" * 65, "id with spaces", "ü-umlaut"):
        response = client.get("/v1/no-such-route", headers={"X-Request-ID": hostile.encode()})
        made = response.headers["x-request-id"]
        assert re.fullmatch(r"[0-9a-f]{32}", made), made
        assert response.json()["request_id"] == made


# --- quotas and the limits they announce ---------------------------------------------------------


def test_only_a_newly_accepted_upload_spends_the_quota(stack: RunningStack, client: httpx.Client) -> None:
    tokens = stack.sign_in(client, random_mobile())
    not_a_photo = client.post(
        "/v1/images", headers=bearer(tokens), files={"file": ("a.jpg", b"\xff\xd8\xff\xe0 not a jpeg", "image/jpeg")}
    )
    not_an_image = client.post(
        "/v1/images", headers=bearer(tokens), files={"file": ("a.txt", b"plain text", "text/plain")}
    )
    first = upload(client, tokens, **{"Idempotency-Key": "hostile-1"})
    replay = upload(client, tokens, **{"Idempotency-Key": "hostile-1"})
    second = upload(client, tokens)

    assert not_a_photo.status_code == 422 and not_an_image.status_code == 415
    assert first.status_code == replay.status_code == second.status_code == 202
    assert replay.json()["id"] == first.json()["id"] != second.json()["id"]
    # 10 an hour: the refusals and the replay took nothing; the two new uploads one each.
    remaining = [int(response.headers["ratelimit-remaining"]) for response in (not_a_photo, not_an_image)]
    assert remaining == [10, 10]
    assert [int(response.headers["ratelimit-remaining"]) for response in (first, replay, second)] == [9, 9, 8]
    for response in (not_a_photo, first, second):
        assert response.headers["ratelimit-policy"] == "10;w=3600"


def test_a_refusal_by_the_verification_limit_carries_that_limits_numbers(
    stack: RunningStack, client: httpx.Client
) -> None:
    phone = random_mobile()
    assert client.post("/v1/auth/otp", json={"phone": phone}).status_code == 202
    code = stack.latest_code(phone)
    wrong = f"{(int(code) + 1) % 1_000_000:06d}"
    answers = [client.post("/v1/auth/otp/verify", json={"phone": phone, "code": wrong}) for _ in range(16)]

    assert [response.status_code for response in answers] == [401] * 15 + [429]
    refused = answers[-1]
    assert refused.json()["limit"] == "code-verifications"
    # Auth's limit (OTP_VERIFICATIONS_PER_PHONE, 15 an hour), not the gateway's per-IP limit.
    assert refused.headers["ratelimit-limit"] == "15"
    assert refused.headers["ratelimit-remaining"] == "0"
    assert refused.headers["ratelimit-policy"] == "15;w=3600"
    assert refused.headers["ratelimit-reset"] == refused.headers["retry-after"]
    assert 3500 <= int(refused.headers["retry-after"]) <= 3600


# --- probes ---------------------------------------------------------------------------------------


def test_readyz_answers_from_a_recent_report_and_is_not_limited(client: httpx.Client) -> None:
    burst = [client.get("/readyz") for _ in range(20)]
    checked = {response.json()["checked_at"] for response in burst}
    time.sleep(2.5)  # READYZ_CACHE_SECONDS, 2 by default
    later = client.get("/readyz").json()["checked_at"]

    assert all(response.status_code == 200 for response in burst)
    # Twenty probes within a moment cost one or two rounds of checks, not twenty.
    assert len(checked) <= 2
    assert later not in checked
    assert not any("ratelimit-limit" in response.headers for response in burst)
