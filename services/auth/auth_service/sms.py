"""SMS providers behind one interface, chosen by SMS_PROVIDER."""

from __future__ import annotations

import asyncio
import fcntl
import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

from auth_service.settings import Settings


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


def build_sender(settings: Settings) -> SmsSender:
    if settings.sms_provider == "outbox":
        return OutboxSender(settings.sms_outbox_path)
    if settings.environment == "production":
        raise ValueError("SMS_PROVIDER=console is for development only")
    return ConsoleSender()
