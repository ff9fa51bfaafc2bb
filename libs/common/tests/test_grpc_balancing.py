"""One gRPC client, several server processes behind one name: the channels that
facerestore_common.grpc_client makes spread their calls over every address the name resolves
to, and a server's max connection age makes a client resolve again and find a new server.

In Kubernetes the name is a headless Service, which DNS resolves to one address per pod. Here a
small DNS server in the test plays that part: it answers A queries for one name with the
loopback addresses that the server processes listen on (127.0.0.2, 127.0.0.3, all on one
port), and the channel asks it through gRPC's own DNS resolver (`dns://<dns server>/<name>`).
The name does not exist anywhere else, so a call can only arrive through that resolution.
"""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import cast

import dns.message
import dns.rdatatype
import dns.rrset
import grpc
import pytest

from facerestore.auth.v1 import auth_pb2, auth_pb2_grpc
from facerestore_common.grpc_client import insecure_channel

SERVER_SCRIPT = Path(__file__).with_name("grpc_identity_server.py")
NAME = "backends.facerestore.test"
ADDRESSES = ("127.0.0.2", "127.0.0.3")


class DnsResponder(asyncio.DatagramProtocol):
    """Answers A queries for the names in `records` (TTL 1 s); anything else gets an empty answer."""

    def __init__(self) -> None:
        self.records: dict[str, list[str]] = {}
        self.queries = 0
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        query = dns.message.from_wire(data)
        response = dns.message.make_response(query)
        for question in query.question:
            addresses = self.records.get(question.name.to_text().rstrip("."))
            if question.rdtype == dns.rdatatype.A and addresses:
                self.queries += 1
                response.answer.append(dns.rrset.from_text_list(question.name, 1, "IN", "A", addresses))
        assert self.transport is not None
        self.transport.sendto(response.to_wire(), addr)


@pytest.fixture
async def resolver() -> AsyncIterator[tuple[DnsResponder, int]]:
    responder = DnsResponder()
    transport, _ = await asyncio.get_running_loop().create_datagram_endpoint(
        lambda: responder, local_addr=("127.0.0.1", 0)
    )
    yield responder, transport.get_extra_info("sockname")[1]
    transport.close()


def port_free_on_every_address() -> int:
    for _ in range(50):
        with socket.socket() as probe:
            probe.bind((ADDRESSES[0], 0))
            port = int(probe.getsockname()[1])
        try:
            for address in ADDRESSES:
                with socket.socket() as sock:
                    sock.bind((address, port))
        except OSError:
            continue
        return port
    raise RuntimeError("no port free on every test address")


@pytest.fixture
def start_server(tmp_path: Path) -> Iterator[Callable[..., None]]:
    """start_server(name, address, port, max_connection_age_seconds=300): a server process, up."""
    processes: list[subprocess.Popen[bytes]] = []

    def start(name: str, address: str, port: int, max_connection_age_seconds: float = 300.0) -> None:
        log = (tmp_path / f"{name}.log").open("wb")
        process = subprocess.Popen(
            [sys.executable, str(SERVER_SCRIPT), name, address, str(port), str(max_connection_age_seconds)],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        processes.append(process)
        deadline = time.monotonic() + 30
        while True:
            assert process.poll() is None, (tmp_path / f"{name}.log").read_text()
            try:
                with socket.create_connection((address, port), timeout=0.5):
                    return
            except OSError:
                assert time.monotonic() < deadline, f"{name} did not open {address}:{port}"
                time.sleep(0.1)

    yield start
    for process in processes:
        process.terminate()
    for process in processes:
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


async def who_answers(channel: grpc.aio.Channel) -> dict[str, str]:
    response = await auth_pb2_grpc.AuthServiceStub(channel).GetJwks(auth_pb2.GetJwksRequest(), timeout=5)
    answer: dict[str, str] = json.loads(response.jwks_json)
    return answer


async def test_one_clients_calls_spread_over_every_server_behind_the_name(
    resolver: tuple[DnsResponder, int], start_server: Callable[..., None]
) -> None:
    responder, dns_port = resolver
    port = port_free_on_every_address()
    responder.records[NAME] = list(ADDRESSES)
    start_server("first", ADDRESSES[0], port)
    start_server("second", ADDRESSES[1], port)
    target = f"dns://127.0.0.1:{dns_port}/{NAME}:{port}"

    async with insecure_channel(target) as channel:
        # Until both connections are up, round_robin uses the ones that are.
        seen: set[str] = set()
        for _ in range(50):
            seen.add((await who_answers(channel))["server"])
            if len(seen) == 2:
                break
        answers = Counter([(await who_answers(channel))["server"] for _ in range(20)])

    assert responder.queries >= 1
    assert seen == {"first", "second"}
    assert answers["first"] >= 8 and answers["second"] >= 8, answers

    # A channel without those options (gRPC's default, pick_first) pins every call to one server:
    # what a client of a scaled-out service would do.
    async with grpc.aio.insecure_channel(target) as plain:
        pinned = Counter([(await who_answers(plain))["server"] for _ in range(20)])
    assert len(pinned) == 1, pinned


async def test_max_connection_age_makes_the_client_reconnect_and_find_a_new_server(
    resolver: tuple[DnsResponder, int], start_server: Callable[..., None]
) -> None:
    responder, dns_port = resolver
    port = port_free_on_every_address()
    responder.records[NAME] = [ADDRESSES[0]]
    start_server("first", ADDRESSES[0], port, max_connection_age_seconds=1.0)
    # gRPC resolves a name at most every 30 s by default; a pod's lifetime dwarfs that, a test's does not.
    quick_resolution = [("grpc.dns_min_time_between_resolutions_ms", 200)]

    async with insecure_channel(f"dns://127.0.0.1:{dns_port}/{NAME}:{port}", extra_options=quick_resolution) as channel:
        first_answer = await who_answers(channel)
        assert first_answer["server"] == "first"
        # A new pod starts and joins the Service.
        start_server("second", ADDRESSES[1], port, max_connection_age_seconds=1.0)
        responder.records[NAME] = list(ADDRESSES)

        seen: Counter[str] = Counter()
        peers_at_first: set[str] = set()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not (seen["second"] and len(peers_at_first) > 1):
            answer = await who_answers(channel)
            seen[answer["server"]] += 1
            if answer["server"] == "first":
                peers_at_first.add(answer["peer"])
            await asyncio.sleep(0.1)

    # The first connection was closed for its age, the client connected again (a new client
    # port), resolved the name again and balanced onto the server that was not there before.
    assert seen["second"] > 0, seen
    assert len(peers_at_first | {first_answer["peer"]}) > 1, peers_at_first
