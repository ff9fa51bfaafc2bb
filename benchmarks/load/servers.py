"""Private RabbitMQ and Redis servers for one load or chaos run.

Faults are injected into these, never into the machine's shared RabbitMQ and Redis that
other runs and tests use: each run starts its own RabbitMQ node (its own node name, ports,
Erlang cookie, data and log folders under the run's temporary folder) and its own
`redis-server` (no persistence), and removes both at the end.

Their ports are taken below the kernel's ephemeral range: a listener that is stopped and
started again must find its port free, and a port in the ephemeral range can meanwhile be
taken as the local end of some outgoing connection (RabbitMQ's `start_app` then fails with
eaddrinuse; this happened on the build machine with a port picked in that range)."""

from __future__ import annotations

import os
import random
import secrets
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

RABBITMQ_BIN = Path("/usr/lib/rabbitmq/bin")
START_TIMEOUT_SECONDS = 90.0
STOP_TIMEOUT_SECONDS = 30.0


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def _bindable(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_low_ports(count: int, taken: set[int] | None = None) -> list[int]:
    """`count` distinct free loopback ports below the ephemeral range."""
    high = _ephemeral_low() - 1
    low = max(1024, high - 12_000)
    taken = set(taken or ())
    chosen: list[int] = []
    for _ in range(count * 200):
        port = random.randint(low, high)  # noqa: S311 - picking a port, not a secret
        if port in taken or not _bindable(port):
            continue
        taken.add(port)
        chosen.append(port)
        if len(chosen) == count:
            return chosen
    raise RuntimeError(f"no {count} free ports between {low} and {high}")


def wait_for_port(port: int, process: subprocess.Popen[bytes] | None, timeout: float, name: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"{name} exited with code {process.returncode} before listening on {port}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"{name} did not listen on port {port} within {timeout:.0f}s")


def _stop_group(process: subprocess.Popen[bytes], sig: signal.Signals = signal.SIGTERM) -> None:
    if process.poll() is None:
        try:
            os.killpg(process.pid, sig)
            process.wait(timeout=STOP_TIMEOUT_SECONDS)
        except ProcessLookupError:
            pass
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
    process.wait()


class PrivateRedis:
    """`redis-server` on a port of its own, keeping nothing on disk (`--save ''`)."""

    def __init__(self, root: Path, taken: set[int] | None = None) -> None:
        self.folder = root / "redis"
        self.folder.mkdir(parents=True, exist_ok=True)
        self._taken = set(taken or ())
        (self.port,) = free_low_ports(1, self._taken)
        self._process: subprocess.Popen[bytes] | None = None
        self._started = False

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        """Start it; the first start moves to another port when its own was taken meanwhile (a port
        free when picked can be bound by another listener before redis binds it: redis then exits,
        while that listener answers the port check). A restart keeps the port the services know."""
        for _ in range(1 if self._started else 5):
            try:
                self._start_on_port()  # raises when redis exits before anything listens
            except RuntimeError:
                pass
            if self._serving():
                self._started = True
                return
            self.stop()
            if self._started:
                break
            self._taken.add(self.port)
            (self.port,) = free_low_ports(1, self._taken)
        raise RuntimeError(f"redis-server could not serve on port {self.port} (see {self.folder / 'redis.log'})")

    def _serving(self) -> bool:
        """Whether the process that answers on the port is this redis-server."""
        if self._process is None or self._process.poll() is not None:
            return False
        client = redis.Redis(port=self.port, socket_timeout=2, socket_connect_timeout=2, retry=Retry(NoBackoff(), 0))
        try:
            info = client.info("server")
        except redis.RedisError:
            return False
        finally:
            client.close()
        return self._process.poll() is None and info["process_id"] == self._process.pid

    def _start_on_port(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed (make brokers installs it)")
        argv = [
            binary,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(self.folder),
            "--logfile",
            str(self.folder / "redis.log"),
        ]
        self._process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, start_new_session=True)
        wait_for_port(self.port, self._process, START_TIMEOUT_SECONDS, "redis-server")

    def stop(self) -> None:
        if self._process is not None:
            _stop_group(self._process)
            self._process = None


class PrivateRabbitMQ:
    """A RabbitMQ node of its own, beside the machine's: `rabbitmqctl -n <node>` reaches it
    through the Erlang cookie in its own HOME."""

    def __init__(self, root: Path, name: str) -> None:
        self.home = root / "rabbitmq"
        self.home.mkdir(parents=True, exist_ok=True)
        self.node = f"{name}@localhost"
        self.port, self.dist_port = free_low_ports(2)
        self._tried_ports: set[int] = set()
        self._started = False
        self._process: subprocess.Popen[bytes] | None = None
        self._log = self.home / "server.log"
        self._epmd_was_running = self._epmd_running()
        self._env = self._prepare()

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}/"

    def _prepare(self) -> dict[str, str]:
        """Write the node's cookie and configuration; returns the environment it runs with."""
        cookie = self.home / ".erlang.cookie"
        if not cookie.exists():
            cookie.write_text(secrets.token_hex(20))
            cookie.chmod(0o400)
        config = self.home / "rabbitmq.conf"
        config.write_text("log.file.level = warning\n")
        (self.home / "enabled_plugins").write_text("[].\n")
        (self.home / "rabbitmq-env.conf").write_text("")
        env = {key: value for key, value in os.environ.items() if not key.startswith(("RABBITMQ_", "ERL_"))}
        env.update(
            HOME=str(self.home),
            RABBITMQ_NODENAME=self.node,
            RABBITMQ_NODE_IP_ADDRESS="127.0.0.1",
            RABBITMQ_NODE_PORT=str(self.port),
            RABBITMQ_DIST_PORT=str(self.dist_port),
            RABBITMQ_MNESIA_BASE=str(self.home / "mnesia"),
            RABBITMQ_LOG_BASE=str(self.home / "log"),
            RABBITMQ_CONFIG_FILE=str(config),
            RABBITMQ_ENABLED_PLUGINS_FILE=str(self.home / "enabled_plugins"),
            RABBITMQ_CONF_ENV_FILE=str(self.home / "rabbitmq-env.conf"),
            # Erlang distribution on loopback only, for the node and for rabbitmqctl alike.
            ERL_EPMD_ADDRESS="127.0.0.1",
            ERL_FLAGS="-kernel inet_dist_use_interface {127,0,0,1}",
        )
        return env

    @staticmethod
    def _binary(name: str) -> str:
        # The Debian wrappers in /usr/sbin switch to the rabbitmq user when run as root; the
        # scripts behind them run the node as whoever starts it, with that HOME's cookie.
        path = RABBITMQ_BIN / name
        found = str(path) if path.exists() else shutil.which(name)
        if found is None:
            raise RuntimeError(f"{name} is not installed (make brokers installs rabbitmq-server)")
        return found

    @staticmethod
    def _epmd_running() -> bool:
        try:
            with socket.create_connection(("127.0.0.1", 4369), timeout=0.5):
                return True
        except OSError:
            return False

    def ctl(self, *args: str, timeout: float = 60.0, tool: str = "rabbitmqctl") -> None:
        command = [self._binary(tool), "-n", self.node, *args]
        result = subprocess.run(command, env=self._env, capture_output=True, text=True, timeout=timeout)
        if result.returncode != 0:
            raise RuntimeError(f"{tool} {' '.join(args)} failed: {result.stderr.strip() or result.stdout}")

    def start(self) -> None:
        """Start the node; the first start moves to other ports when one of its own was taken
        meanwhile (as PrivateRedis does: the port check would pass on the other listener while
        the node fails to boot). A restart keeps the ports the services know."""
        for _ in range(1 if self._started else 5):
            if not self._started and not (_bindable(self.port) and _bindable(self.dist_port)):
                self._move_ports()
            try:
                self._start_node()
                self.ctl("check_port_listener", str(self.port), tool="rabbitmq-diagnostics")
            except (RuntimeError, subprocess.TimeoutExpired):
                self.stop()
                if self._started:
                    raise
                self._move_ports()
                continue
            self._started = True
            return
        raise RuntimeError(f"RabbitMQ node {self.node} could not serve on a port of its own (see {self._log})")

    def _move_ports(self) -> None:
        self._tried_ports |= {self.port, self.dist_port}
        self.port, self.dist_port = free_low_ports(2, self._tried_ports)
        self._env = self._prepare()

    def _start_node(self) -> None:
        with self._log.open("ab") as log:
            self._process = subprocess.Popen(
                [self._binary("rabbitmq-server")],
                env=self._env,
                cwd=self.home,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        wait_for_port(self.port, self._process, START_TIMEOUT_SECONDS, f"RabbitMQ node {self.node}")
        self.ctl("await_startup", "--timeout", str(int(START_TIMEOUT_SECONDS)))

    def stop_app(self) -> None:
        self.ctl("stop_app")

    def start_app(self) -> None:
        self.ctl("start_app")
        wait_for_port(self.port, self._process, START_TIMEOUT_SECONDS, f"RabbitMQ node {self.node}")

    def stop(self) -> None:
        if self._process is None:
            return
        try:
            self.ctl("stop", timeout=STOP_TIMEOUT_SECONDS)
        except (RuntimeError, subprocess.TimeoutExpired):
            pass
        try:
            self._process.wait(timeout=STOP_TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            pass
        _stop_group(self._process)
        self._process = None
        if not self._epmd_was_running:
            # The node started the Erlang port mapper; stop it unless another node still uses it.
            epmd = shutil.which("epmd")
            if epmd is not None:
                names = subprocess.run([epmd, "-names"], capture_output=True, text=True, timeout=10).stdout
                if "name " not in names:
                    subprocess.run([epmd, "-kill"], capture_output=True, timeout=10)
