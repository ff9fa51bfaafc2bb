"""SMS providers behind one interface, chosen by SMS_PROVIDER."""

from __future__ import annotations

import asyncio
import fcntl
import json
import re
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

import requests
from twilio.base.exceptions import TwilioException, TwilioRestException, TwilioServiceException
from twilio.http.http_client import TwilioHttpClient
from twilio.rest import Client

from auth_service.settings import Settings
from facerestore_common.logging import mask_phone


class SmsSendError(Exception):
    """The provider did not take the message."""


class SmsSender(Protocol):
    name: str

    async def send(self, to: str, body: str) -> None: ...


class OutboxSender:
    """Appends each message as one JSON line to a file: the local carrier for development and tests."""

    name = "outbox"

    def __init__(self, path: str) -> None:
        self._path = Path(path)

    def _append(self, line: str) -> None:
        self._path.parent.mkdir(parents=True, exist_ok=True)
        with self._path.open("a", encoding="utf-8") as outbox:
            fcntl.flock(outbox, fcntl.LOCK_EX)
            outbox.write(line + "\n")
            outbox.flush()

    async def send(self, to: str, body: str) -> None:
        line = json.dumps({"to": to, "body": body, "sent_at": datetime.now(UTC).isoformat()})
        try:
            await asyncio.to_thread(self._append, line)
        except OSError as error:
            raise SmsSendError(f"outbox not writable: {error.strerror}") from error


class ConsoleSender:
    """Prints the message to standard error, for a developer watching the terminal."""

    name = "console"

    async def send(self, to: str, body: str) -> None:
        print(f"[sms to {to}] {body}", file=sys.stderr, flush=True)


class TwilioSender:
    """Sends through Twilio's Messages API with the official SDK.

    The SDK's synchronous client runs in a worker thread. Its async variant
    (AsyncTwilioHttpClient + create_async) is not used: in twilio 9.13 it drops the client's
    timeout (create_async passes timeout=None, which aiohttp reads as "no limit"), and its
    aiohttp session belongs to one event loop and must be closed by hand.

    Error texts carry the HTTP status, Twilio's error code and Twilio's message, with the
    number masked; never the message body, which holds the code."""

    name = "twilio"

    def __init__(
        self,
        *,
        account_sid: str,
        auth_token: str,
        messaging_service_sid: str = "",
        from_number: str = "",
        api_base_url: str = "https://api.twilio.com",
        timeout_seconds: float = 10.0,
    ) -> None:
        if not (messaging_service_sid or from_number):
            raise ValueError("TwilioSender needs a messaging service SID or a from number")
        self._timeout = timeout_seconds
        # A Messaging Service picks the sender from its pool; a fixed number is the fallback.
        self._sender: dict[str, str] = (
            {"messaging_service_sid": messaging_service_sid} if messaging_service_sid else {"from_": from_number}
        )
        # No retries (urllib3's default for the adapter): a retried POST could send the code twice.
        self._client = Client(account_sid, auth_token, http_client=TwilioHttpClient(timeout=timeout_seconds))
        # The SDK would rewrite host names from TWILIO_EDGE / TWILIO_REGION in the environment;
        # requests go to api_base_url and nowhere else.
        self._client.edge = None
        self._client.region = None
        # Every Api request is built from the domain's base_url (twilio/base/domain.py).
        self._client.api.base_url = api_base_url.rstrip("/")

    def _create(self, to: str, body: str) -> None:
        self._client.messages.create(to=to, body=body, **self._sender)

    async def send(self, to: str, body: str) -> None:
        try:
            # requests' timeout bounds each connect and each read, not an answer that trickles
            # in; wait_for bounds the whole call. The SDK cannot be interrupted, so on that
            # deadline its thread is left to end by itself (Twilio may still take the message).
            await asyncio.wait_for(asyncio.to_thread(self._create, to, body), self._timeout)
        except (TimeoutError, requests.Timeout) as error:
            raise SmsSendError(f"twilio did not answer within {self._timeout:g} s") from error
        except requests.RequestException as error:
            text = f"twilio unreachable: {type(error).__name__}: {error}"
            raise SmsSendError(_scrub(text, to, body)) from error
        except TwilioRestException as error:
            message = error.msg.removeprefix("Unable to create record: ")
            raise SmsSendError(_scrub(_describe(error.status, error.code, message), to, body)) from error
        except TwilioServiceException as error:
            message = f"{error.title}: {error.detail}" if error.detail else error.title
            raise SmsSendError(_scrub(_describe(error.status, error.code, message), to, body)) from error
        except TwilioException as error:
            raise SmsSendError(_scrub(f"twilio: {error}", to, body)) from error
        except ValueError as error:  # a 2xx answer whose body is not JSON
            raise SmsSendError(f"twilio answered with an unreadable response: {type(error).__name__}") from error


def _describe(status: int, code: int | None, message: str) -> str:
    # Without an error body the SDK repeats the HTTP status as the code.
    if code is None or code == status:
        return f"twilio {status}: {message}"
    return f"twilio {status} ({code}): {message}"


def _scrub(text: str, to: str, body: str) -> str:
    """Masks the number and removes the body and every run of 4+ digits in it (the code)."""
    if to:
        text = text.replace(to, mask_phone(to))
    if body:
        text = text.replace(body, "[body]")
    for secret in re.findall(r"\d{4,}", body):
        text = text.replace(secret, "[redacted]")
    return text


def build_sender(settings: Settings) -> SmsSender:
    if settings.sms_provider == "twilio":
        return TwilioSender(
            account_sid=settings.twilio_account_sid,
            auth_token=settings.twilio_auth_token.get_secret_value(),
            messaging_service_sid=settings.twilio_messaging_service_sid,
            from_number=settings.twilio_from_number,
            api_base_url=settings.twilio_api_base_url,
            timeout_seconds=settings.twilio_timeout_seconds,
        )
    if settings.sms_provider == "outbox":
        return OutboxSender(settings.sms_outbox_path)
    if settings.environment == "production":
        raise ValueError("SMS_PROVIDER=console is for development only")
    return ConsoleSender()
