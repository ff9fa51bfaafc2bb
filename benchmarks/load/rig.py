"""One run's private platform, and the faults that can be done to it.

A Rig starts a RabbitMQ node and a Redis of its own (benchmarks/load/servers.py), then the
whole stack as `make run` starts it (deploy/local/stack.py, driven in this process: the MongoDB
and S3 stand-ins, the mail server, the six services, STACK_INFERENCE_WORKERS inference
workers), on ports of its own and with its data in a temporary folder, and runs Locust
against it. It acts as the supervisor a cluster would be: a process that dies unasked is
recorded and started again. Leaving the `with` block stops everything it started, copies
the services' logs into the results folder and removes the temporary folder."""

from __future__ import annotations

import importlib.util
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType, TracebackType
from typing import Any

from benchmarks.load.servers import PrivateRabbitMQ, PrivateRedis, free_low_ports

ROOT = Path(__file__).resolve().parents[2]
LOCUSTFILE = ROOT / "benchmarks" / "load" / "locustfile.py"
MAX_RESTARTS_PER_PROCESS = 5
BUCKET = "facerestore-images"
QUEUE_PREFIX = "facerestore"
EXCHANGE = "facerestore.events"

# The run's own environment: limits a load needs raised, never the defaults. Every user may
# upload and search as much as the run asks; all of them come from 127.0.0.1.
RAISED_LIMITS = {
    "RATE_LIMIT_UPLOADS_PER_USER": "1000000/hour",
    "RATE_LIMIT_SEARCHES_PER_USER": "1000000/hour",
    "RATE_LIMIT_PER_IP": "10000000/minute",
    "OTP_VERIFICATIONS_PER_PHONE": "100000/hour",
    "OTP_REQUESTS_PER_IP": "100000/hour",
}


def _load_stack_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("facerestore_local_stack", ROOT / "deploy" / "local" / "stack.py")
    if spec is None or spec.loader is None:
        raise RuntimeError("deploy/local/stack.py cannot be loaded")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def signin_numbers(count: int) -> list[tuple[str, str]]:
    """`count` distinct German mobile numbers, each with its own fixed 6-digit code."""
    numbers: dict[str, str] = {}
    while len(numbers) < count:
        numbers[f"+49151{secrets.randbelow(10**8):08d}"] = f"{secrets.randbelow(10**6):06d}"
    return list(numbers.items())


@dataclass
class ProcessEvent:
    at: float
    name: str
    what: str


@dataclass
class Rig:
    results: Path
    workers: int = 2
    users: int = 16
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:8])
    numbers: list[tuple[str, str]] = field(default_factory=list)
    process_events: list[ProcessEvent] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.results.mkdir(parents=True, exist_ok=True)
        self._stack_module = _load_stack_module()
        self.stack: Any = None
        self._restarts: dict[str, int] = {}
        self._saved_environ: dict[str, str] = {}
        self._set_names: list[str] = []
        self.numbers = signin_numbers(self.users)
        self.tmp = Path(tempfile.mkdtemp(prefix=f"facerestore-load-{self.run_id}-"))
        try:
            self.rabbitmq = PrivateRabbitMQ(self.tmp, f"chaos-{self.run_id}")
            self.redis = PrivateRedis(self.tmp, taken={self.rabbitmq.port, self.rabbitmq.dist_port})
        except BaseException:
            shutil.rmtree(self.tmp, ignore_errors=True)
            raise

    # -- setup and teardown ------------------------------------------------------------

    def __enter__(self) -> Rig:
        try:
            self.rabbitmq.start()
            self.redis.start()
            self._start_stack()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.close()

    def environment(self) -> dict[str, str]:
        names = list(self._stack_module.DEFAULT_PORTS)
        ports = dict(zip(names, free_low_ports(len(names), {self.rabbitmq.port, self.redis.port}), strict=True))
        self.ports = ports
        env = {f"STACK_{name}_PORT": str(port) for name, port in ports.items()}
        env.update(
            VAR_DIR=str(self.tmp / "var"),
            FACERESTORE_STACK_ID=f"load-{self.run_id}",
            STACK_INFERENCE_WORKERS=str(self.workers),
            AMQP_URL=self.rabbitmq.url,
            REDIS_URL=self.redis.url,
            PUBLIC_BASE_URL=f"http://127.0.0.1:{ports['GATEWAY']}",
            EVENTS_EXCHANGE=EXCHANGE,
            QUEUE_PREFIX=QUEUE_PREFIX,
            S3_BUCKET=BUCKET,
            RESTORERS="classical",
            FACE_ANALYZER="dlib",
            TEST_PHONE_CODES=",".join(f"{phone}={code}" for phone, code in self.numbers),
            **RAISED_LIMITS,
        )
        return env

    def _start_stack(self) -> None:
        env = self.environment()
        # The stack reads its configuration from this process's environment; this process is
        # the run's own, and the previous values come back in close().
        for name in ("MONGO_URL", "S3_ENDPOINT", "SMTP_HOST", "SMTP_PORT", *env):
            if name in os.environ:
                self._saved_environ[name] = os.environ[name]
        for name in ("MONGO_URL", "S3_ENDPOINT", "SMTP_HOST", "SMTP_PORT"):
            os.environ.pop(name, None)
        os.environ.update(env)
        self._set_names = list(env)
        self.stack = self._stack_module.Stack()
        self.stack.up()

    def close(self) -> None:
        if self.stack is not None:
            self.stack.stop()
            self._copy_logs()
            self.stack = None
        self.rabbitmq.stop()
        self.redis.stop()
        for name in self._set_names:
            os.environ.pop(name, None)
        os.environ.update(self._saved_environ)
        shutil.rmtree(self.tmp, ignore_errors=True)

    def _copy_logs(self) -> None:
        if self.log_dir.is_dir():
            shutil.copytree(self.log_dir, self.results / "logs", dirs_exist_ok=True)
        for name, source in (("rabbitmq", self.rabbitmq.home / "log"), ("redis", self.redis.folder)):
            for path in source.glob("*.log") if source.is_dir() else []:
                target = self.results / "logs" / f"{name}-{path.name}"
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(path, target)

    def leftover_processes(self) -> list[int]:
        """Pids of processes still marked with this run's stack id (none once closed)."""
        marker = f"FACERESTORE_STACK_ID=load-{self.run_id}".encode()
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

    # -- where things are --------------------------------------------------------------

    @property
    def log_dir(self) -> Path:
        """The services' logs while the run lasts (copied to the results folder at the end)."""
        return self.tmp / "var" / "log"

    @property
    def gateway_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['GATEWAY']}"

    @property
    def mongo_url(self) -> str:
        return f"mongodb://127.0.0.1:{self.ports['MONGO']}"

    @property
    def s3_endpoint(self) -> str:
        return f"127.0.0.1:{self.ports['S3']}"

    def worker_names(self) -> list[str]:
        return ["inference"] + [f"inference-{number}" for number in range(2, self.workers + 1)]

    # -- supervision and faults ---------------------------------------------------------

    def supervise(self) -> None:
        """Start again any process of the stack that exited unasked (as a cluster would)."""
        for child in list(self.stack.children):
            code = child.process.poll()
            if code is None:
                continue
            self.stack.children.remove(child)
            count = self._restarts[child.name] = self._restarts.get(child.name, 0) + 1
            self.process_events.append(ProcessEvent(time.time(), child.name, f"exited unasked with code {code}"))
            if count > MAX_RESTARTS_PER_PROCESS:
                raise RuntimeError(f"{child.name} exited {count} times; see {child.log_path}")
            self.stack.start_again(child)

    def restart_process(self, name: str, sig: signal.Signals, down_seconds: float) -> None:
        child = self.stack.stop_one(name, sig)
        time.sleep(down_seconds)
        self.stack.start_again(child)

    def stop_process(self, name: str) -> Any:
        return self.stack.stop_one(name, signal.SIGTERM)

    def start_process(self, child: Any) -> None:
        self.stack.start_again(child)

    def outage_rabbitmq(self, down_seconds: float) -> None:
        self.rabbitmq.stop_app()
        time.sleep(down_seconds)
        self.rabbitmq.start_app()

    def restart_redis(self, down_seconds: float) -> None:
        self.redis.stop()
        time.sleep(down_seconds)
        self.redis.start()

    # -- load ---------------------------------------------------------------------------

    def start_locust(
        self,
        journal: Path,
        budget: int,
        run_seconds: int,
        photos: str,
        wait: tuple[float, float],
        users: int | None = None,
    ) -> subprocess.Popen[bytes]:
        users = users or self.users
        prefix = journal.with_suffix("")
        env = {
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "LOAD_JOURNAL": str(journal),
            "LOAD_MAX_UPLOADS": str(budget),
            "LOAD_PHOTO_MIX": photos,
            "LOAD_WAIT_MIN": str(wait[0]),
            "LOAD_WAIT_MAX": str(wait[1]),
        }
        argv = [
            sys.executable,
            "-m",
            "locust",
            "-f",
            str(LOCUSTFILE),
            "--headless",
            "--users",
            str(users),
            "--spawn-rate",
            str(max(1, users // 2)),
            "--run-time",
            f"{run_seconds}s",
            "--stop-timeout",
            "10",
            "--host",
            self.gateway_url,
            "--csv",
            str(prefix),
            "--only-summary",
            "--loglevel",
            "WARNING",
        ]
        log = (self.results / f"{prefix.name}-locust.log").open("ab")
        try:
            return subprocess.Popen(
                argv,
                cwd=ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                preexec_fn=self._stack_module._die_with_parent,
            )
        finally:
            log.close()
