"""The Twilio sender with the official SDK against a local server that plays Twilio's Messages
API over real HTTP: what reaches Twilio, how each refusal reads, and what the sign-in flow
does when Twilio refuses. The stand-in answers with Twilio's own error JSON and codes."""

from __future__ import annotations

import base64
import json
import re
import secrets
import socket
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import pytest
from motor.motor_asyncio import AsyncIOMotorDatabase
from redis.asyncio import Redis

from auth_service.keys import load_key_ring
from auth_service.otp import OtpStore
from auth_service.sessions import SessionStore
from auth_service.settings import Settings
from auth_service.signin import SignIn
from auth_service.sms import SmsSendError, TwilioSender, build_sender
from auth_service.tokens import AccessTokenIssuer
from auth_service.users import UserRepository
from facerestore_common.errors import Unauthenticated, Unavailable

ACCOUNT_SID = "AC" + "0123456789abcdef" * 2
AUTH_TOKEN = "f3c1a2b4d5e6f7a8b9c0d1e2f3a4b5c6"
MESSAGING_SERVICE_SID = "MG" + "fedcba9876543210" * 2
FROM_NUMBER = "+15005550006"
PHONE = "+4915123456789"
CODE = "482913"
BODY = f"Your sign-in code is {CODE}. It expires in 5 minutes."
MESSAGES_PATH = re.compile(r"^/2010-04-01/Accounts/(?P<account>AC[0-9a-f]{32})/Messages\.json$")


# --- the stand-in ----------------------------------------------------------------------


def twilio_error(status: int, code: int, message: str) -> tuple[int, dict[str, Any]]:
    """The JSON Twilio answers a refused request with."""
    return status, {
        "code": code,
        "message": message,
        "more_info": f"https://www.twilio.com/docs/errors/{code}",
        "status": status,
    }


# Refusals a test can ask for; each gets the To number so the message reads as Twilio's does.
FAILURES = {
    "invalid-to": lambda to: twilio_error(400, 21211, f"The 'To' number {to} is not a valid phone number."),
    "region": lambda to: twilio_error(
        400,
        21408,
        f"Permission to send an SMS has not been enabled for the region indicated by the 'To' number: {to}.",
    ),
    "rate-limit": lambda to: twilio_error(429, 20429, "Too Many Requests"),
    "server-error": lambda to: twilio_error(500, 20500, "An internal server error has occurred"),
}


@dataclass(frozen=True)
class Received:
    """One POST to the Messages resource, as the stand-in saw it."""

    account_sid: str
    username: str
    password: str
    form: dict[str, str]


class TwilioStandIn:
    """Twilio's Messages API on 127.0.0.1: checks HTTP Basic credentials, records every message
    it is handed and answers 201 with a message resource, or the refusal set in `mode`
    ("invalid-to", "region", "rate-limit", "server-error"); in "hang" it answers nothing for
    `hang_seconds`, in "drip" it sends the 201 a byte at a time, each within any read timeout."""

    def __init__(self, account_sid: str, auth_token: str) -> None:
        self.account_sid = account_sid
        self.auth_token = auth_token
        self.mode: str | None = None
        self.hang_seconds = 10.0
        self.received: list[Received] = []
        self._release = threading.Event()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        self._release.set()  # wakes a hanging handler
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def answer(self, path: str, authorization: str | None, form: dict[str, str]) -> tuple[int, dict[str, Any] | bytes]:
        match = MESSAGES_PATH.match(path)
        if match is None:
            return twilio_error(404, 20404, f"The requested resource {path} was not found")
        username, password = _basic_credentials(authorization)
        if (username, password) != (self.account_sid, self.auth_token) or match["account"] != username:
            return twilio_error(401, 20003, "Authenticate")
        self.received.append(Received(match["account"], username, password, form))
        to = form.get("To", "")
        if not to:
            return twilio_error(400, 21604, "A 'To' phone number is required.")
        if not (form.get("From") or form.get("MessagingServiceSid")):
            return twilio_error(400, 21603, "A 'From' or 'MessagingServiceSid' parameter is required.")
        if not form.get("Body"):
            return twilio_error(400, 21602, "Message body is required.")
        if self.mode == "hang":
            self._release.wait(self.hang_seconds)
            return twilio_error(500, 20500, "An internal server error has occurred")
        if self.mode in FAILURES:
            return FAILURES[self.mode](to)
        return 201, self._message_resource(form)

    def _message_resource(self, form: dict[str, str]) -> dict[str, Any]:
        sid = "SM" + secrets.token_hex(16)
        now = format_datetime(datetime.now(UTC))
        uri = f"/2010-04-01/Accounts/{self.account_sid}/Messages/{sid}"
        return {
            "account_sid": self.account_sid,
            "api_version": "2010-04-01",
            "body": form["Body"],
            "date_created": now,
            "date_sent": None,
            "date_updated": now,
            "direction": "outbound-api",
            "error_code": None,
            "error_message": None,
            "from": form.get("From"),
            "messaging_service_sid": form.get("MessagingServiceSid"),
            "num_media": "0",
            "num_segments": "1",
            "price": None,
            "price_unit": "USD",
            "sid": sid,
            "status": "queued",
            "subresource_uris": {"media": f"{uri}/Media.json"},
            "to": form["To"],
            "uri": f"{uri}.json",
        }

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        standin = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                fields = parse_qs(self.rfile.read(length).decode("utf-8"), keep_blank_values=True)
                form = {name: values[-1] for name, values in fields.items()}
                status, payload = standin.answer(self.path, self.headers.get("Authorization"), form)
                data = payload if isinstance(payload, bytes) else json.dumps(payload).encode("utf-8")
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json; charset=utf-8")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    if standin.mode != "drip":
                        self.wfile.write(data)
                        return
                    deadline = time.monotonic() + standin.hang_seconds
                    for byte in data:
                        self.wfile.write(bytes([byte]))
                        self.wfile.flush()
                        if standin._release.wait(0.2) or time.monotonic() > deadline:
                            return
                except OSError:  # the client gave up waiting
                    pass

            def log_message(self, format: str, *args: object) -> None:
                pass

        return Handler


def _basic_credentials(authorization: str | None) -> tuple[str, str]:
    scheme, _, encoded = (authorization or "").partition(" ")
    if scheme.lower() != "basic":
        return "", ""
    username, _, password = base64.b64decode(encoded).decode("utf-8").partition(":")
    return username, password


@pytest.fixture
async def twilio() -> AsyncIterator[TwilioStandIn]:
    # Async so that it closes before the test's event loop does: closing releases a hanging or
    # dripping answer, and the loop's close waits for the worker thread still reading it.
    standin = TwilioStandIn(ACCOUNT_SID, AUTH_TOKEN)
    standin.start()
    yield standin
    standin.close()


def make_sender(standin: TwilioStandIn, **overrides: Any) -> TwilioSender:
    options: dict[str, Any] = {
        "account_sid": ACCOUNT_SID,
        "auth_token": AUTH_TOKEN,
        "messaging_service_sid": MESSAGING_SERVICE_SID,
        "from_number": FROM_NUMBER,
        "api_base_url": standin.url,
        "timeout_seconds": 5.0,
    }
    options.update(overrides)
    return TwilioSender(**options)


def assert_keeps_secrets(text: str) -> None:
    assert CODE not in text
    assert BODY not in text
    assert PHONE not in text


# --- delivery --------------------------------------------------------------------------


async def test_message_reaches_twilio_with_number_body_messaging_service_and_credentials(
    twilio: TwilioStandIn,
) -> None:
    await make_sender(twilio).send(PHONE, BODY)

    (received,) = twilio.received
    assert received.account_sid == ACCOUNT_SID
    assert (received.username, received.password) == (ACCOUNT_SID, AUTH_TOKEN)
    # A Messaging Service picks the sender itself, so no From goes with it.
    assert received.form == {"To": PHONE, "Body": BODY, "MessagingServiceSid": MESSAGING_SERVICE_SID}


async def test_without_a_messaging_service_the_from_number_is_the_sender(twilio: TwilioStandIn) -> None:
    await make_sender(twilio, messaging_service_sid="").send(PHONE, BODY)

    (received,) = twilio.received
    assert received.form == {"To": PHONE, "Body": BODY, "From": FROM_NUMBER}


async def test_sender_needs_a_messaging_service_or_a_from_number(twilio: TwilioStandIn) -> None:
    with pytest.raises(ValueError, match="messaging service SID or a from number"):
        make_sender(twilio, messaging_service_sid="", from_number="")


async def test_twilio_region_in_the_environment_does_not_redirect_requests(
    twilio: TwilioStandIn, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The SDK would otherwise rewrite the host to 127.0.0.ie1.1:port.
    monkeypatch.setenv("TWILIO_REGION", "ie1")
    monkeypatch.setenv("TWILIO_EDGE", "dublin")

    await make_sender(twilio).send(PHONE, BODY)

    assert [received.form["To"] for received in twilio.received] == [PHONE]


# --- refusals --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        ("invalid-to", "twilio 400 (21211): The 'To' number +49*********89 is not a valid phone number."),
        (
            "region",
            "twilio 400 (21408): Permission to send an SMS has not been enabled for the region "
            "indicated by the 'To' number: +49*********89.",
        ),
        ("rate-limit", "twilio 429 (20429): Too Many Requests"),
        ("server-error", "twilio 500 (20500): An internal server error has occurred"),
    ],
)
async def test_refusal_names_status_twilio_code_and_message_but_not_the_code_or_number(
    twilio: TwilioStandIn, mode: str, expected: str
) -> None:
    twilio.mode = mode

    with pytest.raises(SmsSendError) as caught:
        await make_sender(twilio).send(PHONE, BODY)

    assert str(caught.value) == expected
    assert_keeps_secrets(str(caught.value))
    # Twilio was handed the body, so the code was there to leak.
    assert [received.form["Body"] for received in twilio.received] == [BODY]


async def test_wrong_auth_token_is_refused_with_twilio_20003(twilio: TwilioStandIn) -> None:
    with pytest.raises(SmsSendError) as caught:
        await make_sender(twilio, auth_token="0" * 32).send(PHONE, BODY)

    assert str(caught.value) == "twilio 401 (20003): Authenticate"
    assert twilio.received == []


async def test_refusal_that_echoes_the_body_does_not_carry_it_into_the_error(
    twilio: TwilioStandIn, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(FAILURES, "echo", lambda to: twilio_error(400, 21617, f"Cannot send '{BODY}' to {to}"))
    twilio.mode = "echo"

    with pytest.raises(SmsSendError) as caught:
        await make_sender(twilio).send(PHONE, BODY)

    assert str(caught.value) == "twilio 400 (21617): Cannot send '[body]' to +49*********89"


async def test_problem_details_refusal_names_status_code_title_and_detail(
    twilio: TwilioStandIn, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Twilio's newer APIs answer in RFC 9457 form, which the SDK raises as another exception.
    problem = {
        "type": "https://www.twilio.com/docs/errors/20429",
        "title": "Too Many Requests",
        "status": 429,
        "code": 20429,
        "detail": f"Slow down sending to {PHONE}",
    }
    monkeypatch.setitem(FAILURES, "problem", lambda to: (429, problem))
    twilio.mode = "problem"

    with pytest.raises(SmsSendError) as caught:
        await make_sender(twilio).send(PHONE, BODY)

    assert str(caught.value) == "twilio 429 (20429): Too Many Requests: Slow down sending to +49*********89"


async def test_success_answer_that_is_not_json_is_a_send_error(
    twilio: TwilioStandIn, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(FAILURES, "not-json", lambda to: (201, b"<html>queued</html>"))
    twilio.mode = "not-json"

    with pytest.raises(SmsSendError) as caught:
        await make_sender(twilio).send(PHONE, BODY)

    assert str(caught.value) == "twilio answered with an unreadable response: JSONDecodeError"


async def test_twilio_that_does_not_answer_fails_within_the_timeout(twilio: TwilioStandIn) -> None:
    twilio.mode = "hang"
    sender = make_sender(twilio, timeout_seconds=1)

    started = time.monotonic()
    with pytest.raises(SmsSendError) as caught:
        await sender.send(PHONE, BODY)
    elapsed = time.monotonic() - started

    assert 0.9 <= elapsed < 2.5
    assert str(caught.value) == "twilio did not answer within 1 s"
    assert len(twilio.received) == 1


async def test_answer_that_trickles_in_fails_within_the_timeout(twilio: TwilioStandIn) -> None:
    # Every byte comes within the read timeout; only a deadline on the whole call stops this.
    twilio.mode = "drip"
    sender = make_sender(twilio, timeout_seconds=1)

    started = time.monotonic()
    with pytest.raises(SmsSendError) as caught:
        await sender.send(PHONE, BODY)

    assert time.monotonic() - started < 2.5
    assert str(caught.value) == "twilio did not answer within 1 s"


async def test_unreachable_twilio_is_a_send_error() -> None:
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    sender = TwilioSender(
        account_sid=ACCOUNT_SID,
        auth_token=AUTH_TOKEN,
        from_number=FROM_NUMBER,
        api_base_url=f"http://127.0.0.1:{port}",
        timeout_seconds=2,
    )

    with pytest.raises(SmsSendError) as caught:
        await sender.send(PHONE, BODY)

    assert str(caught.value).startswith("twilio unreachable: ConnectionError: ")
    assert_keeps_secrets(str(caught.value))


# --- settings --------------------------------------------------------------------------


async def test_build_sender_returns_a_twilio_sender_that_uses_the_configured_api(twilio: TwilioStandIn) -> None:
    settings = Settings(
        sms_provider="twilio",
        twilio_account_sid=ACCOUNT_SID,
        twilio_auth_token=AUTH_TOKEN,
        twilio_from_number=FROM_NUMBER,
        twilio_api_base_url=twilio.url + "/",
        twilio_timeout_seconds=3,
    )

    sender = build_sender(settings)
    await sender.send(PHONE, BODY)

    assert isinstance(sender, TwilioSender)
    assert sender.name == "twilio"
    (received,) = twilio.received
    assert (received.username, received.password) == (ACCOUNT_SID, AUTH_TOKEN)
    assert received.form == {"To": PHONE, "Body": BODY, "From": FROM_NUMBER}


# --- the sign-in flow ------------------------------------------------------------------


async def test_twilio_refusal_makes_request_code_unavailable_and_leaves_no_valid_code(
    twilio: TwilioStandIn, redis: Redis, database: AsyncIOMotorDatabase, unique_name: str, tmp_path: Path
) -> None:
    twilio.mode = "region"
    otp = OtpStore(redis, b"test-otp-secret", ttl_seconds=300, max_attempts=3, prefix=unique_name)
    signin = SignIn(
        otp=otp,
        sms=make_sender(twilio),
        users=UserRepository(database),
        sessions=SessionStore(database, ttl_seconds=3600),
        access_tokens=AccessTokenIssuer(
            load_key_ring(tmp_path / "keys", create_if_empty=True), "facerestore-auth", "facerestore", 900
        ),
        admin_phones=[],
        default_region="DE",
    )

    with pytest.raises(Unavailable) as caught:
        await signin.request_code(PHONE)

    assert caught.value.reason == "sms-unavailable"
    assert [key async for key in redis.scan_iter(match=f"{unique_name}:*")] == []
    # The code Twilio was handed does not sign anyone in.
    (received,) = twilio.received
    (code,) = re.findall(r"\b\d{6}\b", received.form["Body"])
    with pytest.raises(Unauthenticated) as refused:
        await signin.verify_code(PHONE, code)
    assert refused.value.reason == "invalid-code"
    assert await database["users"].count_documents({}) == 0
