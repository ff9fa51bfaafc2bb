"""Starts the platform as `make run` does (deploy/local/stack.py), on free ports and
a private data folder, against the machine's real RabbitMQ and Redis."""

from __future__ import annotations

import asyncio
import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from pathlib import Path
from typing import Any

import aio_pika
import httpx
from aiosmtpd.controller import Controller
from redis.asyncio import Redis

from facerestore_common.topology import CONSUMER_BINDINGS, embed_queue_name

ROOT = Path(__file__).resolve().parents[1]
STACK_SCRIPT = ROOT / "deploy" / "local" / "stack.py"
PORT_NAMES = (
    "GATEWAY",
    "AUTH",
    "UPLOAD",
    "HISTORY",
    "ADMIN",
    "INFERENCE_METRICS",
    "GATEWAY_METRICS",
    "AUTH_METRICS",
    "UPLOAD_METRICS",
    "HISTORY_METRICS",
    "ADMIN_METRICS",
    "MONGO",
    "S3",
    "SMTP",
)


def free_ports(count: int) -> list[int]:
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def random_mobile() -> str:
    """A valid German mobile number (+49 151 ...), different on every call."""
    return f"+49151{secrets.randbelow(10**8):08d}"


class _Recorder:
    def __init__(self) -> None:
        self.messages: list[EmailMessage] = []

    async def handle_DATA(self, server: object, session: object, envelope: Any) -> str:  # noqa: N802 - aiosmtpd hook
        self.messages.append(BytesParser(policy=policy.default).parsebytes(envelope.content))  # type: ignore[arg-type]
        return "250 OK"


class Mailbox:
    """A local SMTP server (aiosmtpd) that records every message it is given."""

    def __init__(self) -> None:
        self.port = free_ports(1)[0]
        self._recorder = _Recorder()
        self._controller = Controller(self._recorder, hostname="127.0.0.1", port=self.port)

    def start(self) -> None:
        self._controller.start()

    def stop(self) -> None:
        self._controller.stop()

    def latest_code(self, address: str, timeout: float = 10.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for message in reversed(self._recorder.messages):
                if message["To"] == address:
                    match = re.search(r"\b(\d{6})\b", message.get_content())
                    assert match, message.get_content()
                    return match.group(1)
            time.sleep(0.1)
        raise AssertionError(f"no email to {address}")

    def count_to(self, address: str) -> int:
        return sum(1 for message in self._recorder.messages if message["To"] == address)


@dataclass
class RunningStack:
    var_dir: Path
    stack_id: str
    admin_phone: str
    smtp_port: int = 0
    ports: dict[str, int] = field(default_factory=dict)
    process: subprocess.Popen[str] | None = None
    namespace: str = field(default_factory=lambda: f"test-{uuid.uuid4().hex[:8]}")
    # Settings of this stack alone (e.g. a higher upload limit), applied last.
    extra_env: dict[str, str] = field(default_factory=dict)
    # More admin numbers: the tests of a session sign an admin in more often than the
    # per-number code limit (5 an hour, tested on its own) allows one number.
    spare_admin_phones: list[str] = field(default_factory=lambda: [random_mobile() for _ in range(8)])
    _admin_sign_ins: int = 0

    def admin_sign_in_phone(self) -> str:
        """An admin number with codes to spare: admin_phone first, then the spares, four sign-ins each."""
        phones = [self.admin_phone, *self.spare_admin_phones]
        phone = phones[min(self._admin_sign_ins // 4, len(phones) - 1)]
        self._admin_sign_ins += 1
        return phone

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['GATEWAY']}"

    @property
    def outbox(self) -> Path:
        return self.var_dir / "sms_outbox.jsonl"

    def environment(self) -> dict[str, str]:
        env = {key: value for key, value in os.environ.items() if not key.startswith("STACK_")}
        for name in ("MONGO_URL", "S3_ENDPOINT", "SMTP_HOST", "SMTP_PORT"):
            env.pop(name, None)
        env.update({f"STACK_{name}_PORT": str(port) for name, port in self.ports.items()})
        env.update(
            VAR_DIR=str(self.var_dir),
            FACERESTORE_STACK_ID=self.stack_id,
            ADMIN_PHONES=",".join([self.admin_phone, *self.spare_admin_phones]),
            EVENTS_EXCHANGE=f"{self.namespace}.events",
            QUEUE_PREFIX=self.namespace,
            REDIS_KEY_PREFIX=self.namespace,
            JWT_KEY_RELOAD_SECONDS="1",
            JWT_KEY_ACTIVATION_SECONDS="6",
            # Tests sign the same number in again at once and all come from 127.0.0.1;
            # the limits themselves are tested on their own.
            OTP_RESEND_COOLDOWN_SECONDS="0",
            OTP_REQUESTS_PER_IP="1000/hour",
            RATE_LIMIT_PER_IP="100000/minute",
            # An upload made while the broker is down is relayed soon after it is back.
            PUBLISH_TIMEOUT_SECONDS="2",
            OUTBOX_GRACE_SECONDS="1",
            OUTBOX_RELAY_INTERVAL_SECONDS="0.5",
            OUTBOX_RETRY_SECONDS="1",
            LOG_LEVEL="INFO",
            # Image links are absolute from it; the web app loads them from its own origin.
            PUBLIC_BASE_URL=self.base_url,
        )
        if self.smtp_port:
            env.update(SMTP_HOST="127.0.0.1", SMTP_PORT=str(self.smtp_port))
        env.update(self.extra_env)
        return env

    def start(self, timeout: float = 120.0) -> None:
        if not self.ports:
            self.ports = dict(zip(PORT_NAMES, free_ports(len(PORT_NAMES)), strict=True))
        self.process = subprocess.Popen(
            [sys.executable, str(STACK_SCRIPT)],
            cwd=ROOT,
            env=self.environment(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        deadline = time.monotonic() + timeout
        output = []
        assert self.process.stdout is not None
        for line in self.process.stdout:
            output.append(line)
            if "platform is up" in line:
                return
            if time.monotonic() > deadline:
                break
        self.stop()
        raise RuntimeError("the stack did not come up:\n" + "".join(output) + self.logs_tail())

    def logs_tail(self, lines: int = 30) -> str:
        text = []
        for log in sorted((self.var_dir / "log").glob("*.log")):
            tail = log.read_text(errors="replace").splitlines()[-lines:]
            text.append(f"--- {log.name}\n" + "\n".join(tail))
        return "\n".join(text)

    def stop(self, timeout: float = 40.0) -> int:
        if self.process is None:
            return 0
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            code = self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            code = self.process.wait()
        self.process = None
        return code

    def remove_shared_state(self) -> None:
        """Delete this stack's queues and exchanges from the shared broker, and its Redis keys."""

        async def remove() -> None:
            connection = await aio_pika.connect(os.environ.get("TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/"))
            async with connection:
                channel = await connection.channel()
                for consumer in CONSUMER_BINDINGS:
                    base = f"{self.namespace}.{consumer}"
                    for queue in (base, f"{base}.retry", f"{base}.dlq"):
                        await channel.queue_delete(queue)
                await channel.queue_delete(embed_queue_name(self.namespace))
                for exchange in (f"{self.namespace}.events", f"{self.namespace}.events.dlx"):
                    await channel.exchange_delete(exchange)
            redis = Redis.from_url(os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0"))
            async with redis:
                keys = [key async for key in redis.scan_iter(match=f"{self.namespace}*")]
                if keys:
                    await redis.delete(*keys)

        asyncio.run(remove())

    def leftover_processes(self) -> list[int]:
        """Pids of processes still marked with this stack's id."""
        marker = f"FACERESTORE_STACK_ID={self.stack_id}".encode()
        found = []
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit() or int(proc.name) == os.getpid():
                continue
            try:
                if marker in (proc / "environ").read_bytes().split(b"\0"):
                    found.append(int(proc.name))
            except OSError:
                continue
        return found

    def latest_code(self, phone: str, timeout: float = 10.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.outbox.exists():
                for line in reversed(self.outbox.read_text().splitlines()):
                    message = json.loads(line)
                    if message["to"] == phone:
                        match = re.search(r"\b(\d{6})\b", message["body"])
                        assert match, message
                        return match.group(1)
            time.sleep(0.1)
        raise AssertionError(f"no SMS to {phone} in {self.outbox}")

    def sign_in(self, client: httpx.Client, phone: str) -> dict[str, str]:
        response = client.post("/v1/auth/otp", json={"phone": phone})
        assert response.status_code == 202, response.text
        code = self.latest_code(phone)
        response = client.post("/v1/auth/otp/verify", json={"phone": phone, "code": code})
        assert response.status_code == 200, response.text
        return response.json()
