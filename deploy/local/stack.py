#!/usr/bin/env python3
"""Runs the whole platform on one machine, each service as a process.

Starts the MongoDB stand-in (nx-27017) and the S3 stand-in (localbucket) unless
MONGO_URL / S3_ENDPOINT point at real servers, a local mail server (aiosmtpd, keeping
messages under VAR_DIR/mail) unless SMTP_HOST is set, then the six services, waits until
the gateway is ready and prints where to go. SIGINT or SIGTERM stops every process
it started; if one of them dies, it stops the rest and exits non-zero.

Ports come from STACK_<NAME>_PORT (defaults below); data and logs go under VAR_DIR.
STACK_INFERENCE_WORKERS (default 1) starts that many inference workers sharing the queue
(the second and later ones, `inference-2`, ..., with their metrics endpoint off).
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
DEFAULT_PORTS = {
    "GATEWAY": 8080,
    "AUTH": 50051,
    "UPLOAD": 50052,
    "HISTORY": 50053,
    "ADMIN": 50054,
    "INFERENCE_METRICS": 9100,
    "GATEWAY_METRICS": 9101,
    "AUTH_METRICS": 9102,
    "UPLOAD_METRICS": 9103,
    "HISTORY_METRICS": 9104,
    "ADMIN_METRICS": 9105,
    "MONGO": 27017,
    "S3": 9000,
    "SMTP": 1025,
}
STOP_GRACE_SECONDS = 15.0
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    # If this launcher is killed outright, the kernel stops its children too.
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except OSError:
        pass


class StopRequested(Exception):
    pass


@dataclass
class Child:
    name: str
    process: subprocess.Popen[bytes]
    log_path: Path
    argv: list[str]
    env: dict[str, str]


class Stack:
    def __init__(self) -> None:
        self.var_dir = Path(os.environ.get("VAR_DIR", ROOT / "var")).resolve()
        self.ports = {name: int(os.environ.get(f"STACK_{name}_PORT", port)) for name, port in DEFAULT_PORTS.items()}
        self.children: list[Child] = []
        self.stopping = False
        self.stop_requested = False

    def environment(self) -> dict[str, str]:
        env = dict(os.environ)
        env.setdefault("MONGO_URL", f"mongodb://127.0.0.1:{self.ports['MONGO']}")
        env.setdefault("S3_ENDPOINT", f"127.0.0.1:{self.ports['S3']}")
        env.setdefault("SMS_OUTBOX_PATH", str(self.var_dir / "sms_outbox.jsonl"))
        env.setdefault("SMTP_HOST", "127.0.0.1")
        env.setdefault("SMTP_PORT", str(self.ports["SMTP"]))
        env.setdefault("JWT_KEY_DIR", str(self.var_dir / "keys"))
        env.setdefault("FACE_INDEX_PATH", str(self.var_dir / "face-index"))
        env.update(
            AUTH_GRPC_TARGET=f"127.0.0.1:{self.ports['AUTH']}",
            UPLOAD_GRPC_TARGET=f"127.0.0.1:{self.ports['UPLOAD']}",
            HISTORY_GRPC_TARGET=f"127.0.0.1:{self.ports['HISTORY']}",
            ADMIN_GRPC_TARGET=f"127.0.0.1:{self.ports['ADMIN']}",
            PYTHONUNBUFFERED="1",
            # Marks every process of this stack, so that tests can prove none is left behind.
            FACERESTORE_STACK_ID=os.environ.get("FACERESTORE_STACK_ID", "local"),
        )
        return env

    def start(self, name: str, argv: list[str], env: dict[str, str]) -> None:
        log_dir = self.var_dir / "log"
        log_dir.mkdir(parents=True, exist_ok=True)
        log_path = log_dir / f"{name}.log"
        with log_path.open("ab") as log:
            process = subprocess.Popen(
                argv,
                cwd=ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )
        self.children.append(Child(name, process, log_path, argv, env))

    def stop_one(self, name: str, sig: signal.Signals = signal.SIGTERM) -> Child:
        """Stop one process (SIGKILL: as a crash would) and forget it; returns it for start_again()."""
        child = next(child for child in self.children if child.name == name)
        self.children.remove(child)
        try:
            os.killpg(child.process.pid, sig)
            child.process.wait(timeout=STOP_GRACE_SECONDS)
        except ProcessLookupError:
            pass
        except subprocess.TimeoutExpired:
            os.killpg(child.process.pid, signal.SIGKILL)
        child.process.wait()
        return child

    def start_again(self, child: Child) -> None:
        """Start a stopped process again with the same command and environment."""
        self.start(child.name, child.argv, child.env)

    def start_service(self, name: str, env: dict[str, str], **extra: str) -> None:
        self.start(name, [sys.executable, "-m", f"{name}_service.main"], {**env, **extra})

    def wait_for_port(self, name: str, port: int, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.check_children()
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.2)
        raise RuntimeError(f"{name} did not open port {port} within {timeout:.0f}s")

    @staticmethod
    def _ready(port: int) -> dict[str, object] | None:
        """The /readyz report on a local port, or None while it is not 200."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=3) as response:
                body: dict[str, object] = json.loads(response.read())
                return body
        except (OSError, ValueError):
            return None

    def wait_until_ready(self, timeout: float = 90.0) -> None:
        """Until the gateway is ready and says every service is serving, and the worker is ready.
        (The gateway's own readiness needs only Redis, so it alone says little about the rest.)"""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.check_children()
            report = self._ready(self.ports["GATEWAY"]) or {}
            backends = report.get("backends")
            services_serving = isinstance(backends, dict) and set(backends.values()) == {"serving"}
            worker_port = self.ports["INFERENCE_METRICS"]  # 0: its endpoint is off, nothing to ask
            if services_serving and (not worker_port or self._ready(worker_port) is not None):
                return
            time.sleep(0.5)
        raise RuntimeError(f"the platform was not ready within {timeout:.0f}s (gateway and inference /readyz)")

    def check_children(self) -> None:
        if self.stop_requested:
            raise StopRequested
        for child in self.children:
            code = child.process.poll()
            if code is not None and not self.stopping:
                tail = child.log_path.read_text(errors="replace").splitlines()[-15:]
                raise RuntimeError(
                    f"{child.name} exited with code {code}; last lines of {child.log_path}:\n" + "\n".join(tail)
                )

    def stop(self) -> None:
        self.stopping = True
        for child in reversed(self.children):
            if child.process.poll() is None:
                os.killpg(child.process.pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_SECONDS
        for child in reversed(self.children):
            try:
                child.process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                print(f"{child.name} did not stop in time; killing it", file=sys.stderr)
            try:
                os.killpg(child.process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            child.process.wait()

    def up(self) -> None:
        env = self.environment()
        if "MONGO_URL" not in os.environ:
            (self.var_dir / "mongo").mkdir(parents=True, exist_ok=True)
            self.start(
                "mongo",
                [
                    str(BIN / "nx-27017"),
                    "--data-dir",
                    str(self.var_dir / "mongo"),
                    "--pid-file",
                    str(self.var_dir / "mongo.pid"),
                    "--host",
                    "127.0.0.1",
                    "-p",
                    str(self.ports["MONGO"]),
                ],
                env,
            )
            self.wait_for_port("mongo", self.ports["MONGO"])
        if "S3_ENDPOINT" not in os.environ:
            (self.var_dir / "s3").mkdir(parents=True, exist_ok=True)
            self.start(
                "s3",
                [
                    str(BIN / "localbucket"),
                    str(self.var_dir / "s3"),
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(self.ports["S3"]),
                ],
                env,
            )
            self.wait_for_port("s3", self.ports["S3"])
        if "SMTP_HOST" not in os.environ:
            # A local mail server that keeps every message in a Maildir (email sign-in codes).
            self.start(
                "smtp",
                [
                    sys.executable,
                    "-m",
                    "aiosmtpd",
                    "-n",
                    "-l",
                    f"127.0.0.1:{self.ports['SMTP']}",
                    "-c",
                    "aiosmtpd.handlers.Mailbox",
                    str(self.var_dir / "mail"),
                ],
                env,
            )
            self.wait_for_port("smtp", self.ports["SMTP"])
        self.start_service("auth", env, GRPC_PORT=str(self.ports["AUTH"]), METRICS_PORT=str(self.ports["AUTH_METRICS"]))
        self.wait_for_port("auth", self.ports["AUTH"])
        self.start_service(
            "upload", env, GRPC_PORT=str(self.ports["UPLOAD"]), METRICS_PORT=str(self.ports["UPLOAD_METRICS"])
        )
        self.start_service(
            "history", env, GRPC_PORT=str(self.ports["HISTORY"]), METRICS_PORT=str(self.ports["HISTORY_METRICS"])
        )
        self.start_service(
            "admin", env, GRPC_PORT=str(self.ports["ADMIN"]), METRICS_PORT=str(self.ports["ADMIN_METRICS"])
        )
        # The workers form one group with a standby entry in the model registry, as the chart's
        # groups do: while a worker is down (killed, restarting), uploads for its models are still
        # accepted and wait in their queue instead of being refused as model-unavailable.
        workers = {"WORKER_GROUP": "local", "STANDBY_OFFER_SECONDS": "3600", **env}
        self.start_service("inference", workers, METRICS_PORT=str(self.ports["INFERENCE_METRICS"]))
        for number in range(2, int(os.environ.get("STACK_INFERENCE_WORKERS", "1")) + 1):
            argv = [sys.executable, "-m", "inference_service.main"]
            self.start(f"inference-{number}", argv, {**workers, "METRICS_PORT": "0"})
        self.start_service(
            "gateway",
            env,
            HTTP_PORT=str(self.ports["GATEWAY"]),
            METRICS_PORT=str(self.ports["GATEWAY_METRICS"]),
            # Image links point here (never at whatever Host a request names).
            PUBLIC_BASE_URL=env.get("PUBLIC_BASE_URL", f"http://127.0.0.1:{self.ports['GATEWAY']}"),
        )
        self.wait_until_ready()

    def banner(self) -> str:
        gateway = f"http://127.0.0.1:{self.ports['GATEWAY']}"
        outbox = self.environment()["SMS_OUTBOX_PATH"]
        return "\n".join(
            [
                "",
                "Face restoration platform is up.",
                f"  Web app:      {gateway}/",
                f"  API:          {gateway}/v1   (docs: {gateway}/docs, OpenAPI: {gateway}/openapi.json)",
                f"  Sign-in codes: appended to {outbox} (one JSON line per SMS)",
                f"  Email codes:  {self.var_dir / 'mail'}/new/ (one file per message) unless SMTP_HOST is set",
                "  Metrics:      "
                + ", ".join(
                    f"{name.removesuffix('_METRICS').lower()} :{port}/metrics"
                    for name, port in self.ports.items()
                    if name.endswith("_METRICS") and port
                ),
                f"  Logs:         {self.var_dir / 'log'}/<service>.log",
                f"  Data:         {self.var_dir}",
                "Press Ctrl-C to stop everything.",
                "",
            ]
        )


def main() -> int:
    # Started by `make run`, a SIGTERM to make would not reach us; this makes its death do so.
    _die_with_parent()
    stack = Stack()

    def request_stop(signum: int, _frame: object) -> None:
        stack.stop_requested = True

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    try:
        stack.up()
        print(stack.banner(), flush=True)
        while True:
            stack.check_children()
            time.sleep(0.5)
    except StopRequested:
        print("stopping...", flush=True)
        return 0
    except RuntimeError as error:
        print(f"error: {error}", file=sys.stderr, flush=True)
        return 1
    finally:
        stack.stop()
        print("stopped.", flush=True)


if __name__ == "__main__":
    sys.exit(main())
