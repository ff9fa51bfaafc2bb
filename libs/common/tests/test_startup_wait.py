"""Start-up's waits for MongoDB, Redis and S3 while the server is not there yet: a TcpRelay in
front of the real server (the MongoDB and S3 stand-ins, the machine's Redis) refuses connections
(cut) and later forwards them (restore), so the shared servers are never stopped. Each wait
gives up at its deadline naming the address and never a credential. (The broker's wait:
test_broker_connect.py.)"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import pytest
from pydantic import SecretStr
from redis.asyncio import Redis
from redis.exceptions import AuthenticationError
from structlog.testing import capture_logs

from facerestore_common import mongo
from facerestore_common.redis_connect import ping_when_available, redis_address
from facerestore_common.settings import StorageSettings
from facerestore_common.startup_wait import DependencyUnavailableError, StartupDeadline
from facerestore_common.storage import BlobStore

if TYPE_CHECKING:
    from conftest import TcpRelay

SAFETY_SECONDS = 60.0  # bounds a hung test, never a measurement
SECRET = "s3cret-pw%2Fx"  # percent-encoded in URLs: logs must hide both forms
DECODED_SECRET = "s3cret-pw/x"

RelayStarter = Callable[[str], Awaitable["TcpRelay"]]


async def refusing(tcp_relay: RelayStarter, address: str) -> TcpRelay:
    """A relay to the real server at `address` that refuses connections until restore()."""
    relay = await tcp_relay(address)
    await relay.cut()
    return relay


def through(relay: TcpRelay, url: str) -> str:
    """url with its host and port replaced by the relay's (its credentials kept)."""
    parts = urlsplit(url)
    userinfo, at, _ = parts.netloc.rpartition("@")
    return parts._replace(netloc=f"{userinfo}{at}127.0.0.1:{relay.port}").geturl()


def events(logs: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    return [entry for entry in logs if entry["event"] == name]


async def until(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + SAFETY_SECONDS
    while not condition():
        assert time.monotonic() < deadline, "condition not met"
        await asyncio.sleep(0.05)


async def wait_through_an_outage(
    relay: TcpRelay, waiting: Awaitable[Any], dependency: str
) -> tuple[Any, list[dict[str, Any]]]:
    """Start `waiting`, let it fail against the cut relay, restore the relay, and return what it
    returned and the logs, having checked what they say about the failed attempts."""
    with capture_logs() as logs:
        task = asyncio.ensure_future(waiting)
        await until(lambda: bool(events(logs, "startup_dependency_unavailable")))
        assert not task.done()
        await relay.restore()
        result = await asyncio.wait_for(task, SAFETY_SECONDS)
    failed = events(logs, "startup_dependency_unavailable")
    assert [entry["attempt"] for entry in failed] == list(range(1, len(failed) + 1))
    for entry in failed:
        assert entry["dependency"] == dependency
        assert entry["address"] == f"127.0.0.1:{relay.port}"
        assert entry["log_level"] == "warning"
        assert entry["retry_in_seconds"] > 0
    available = events(logs, "startup_dependency_available")
    assert [(entry["dependency"], entry["attempts"]) for entry in available] == [(dependency, len(failed) + 1)]
    return result, logs


async def gives_up(relay: TcpRelay, waiting: Awaitable[Any], dependency: str, secrets: list[str]) -> None:
    """`waiting` against the cut relay raises DependencyUnavailableError naming the address and
    the deadline, logged as an error, with none of `secrets` in the error or the logs."""
    with capture_logs() as logs, pytest.raises(DependencyUnavailableError) as raised:
        await asyncio.wait_for(waiting, SAFETY_SECONDS)
    message = str(raised.value)
    assert f"the {dependency} at 127.0.0.1:{relay.port} did not answer within the 1 s start-up wait" in message
    (gave_up,) = events(logs, "startup_dependency_gave_up")
    assert gave_up["address"] == f"127.0.0.1:{relay.port}"
    assert gave_up["attempts"] == len(events(logs, "startup_dependency_unavailable")) + 1
    assert gave_up["log_level"] == "error"
    logged = json.dumps(logs, default=str)
    for secret in secrets:
        assert secret not in message
        assert secret not in logged


async def test_mongodb_start_up_waits_for_a_server_that_comes_up(
    mongo_url: str, unique_name: str, tcp_relay: RelayStarter
) -> None:
    relay = await refusing(tcp_relay, urlsplit(mongo_url).netloc)
    waiting = mongo.connect_when_available(f"mongodb://127.0.0.1:{relay.port}", unique_name, StartupDeadline(120))
    database, _ = await wait_through_an_outage(relay, waiting, "mongodb")
    try:
        # What start-up does next: index creation, then the service's writes.
        await database["items"].create_index("owner")
        await database["items"].insert_one({"_id": "a", "owner": "u1"})
        assert await database["items"].find_one({"owner": "u1"}) == {"_id": "a", "owner": "u1"}
    finally:
        await database.client.drop_database(unique_name)
        # In a thread: close() waits for the client's monitor thread, whose reply comes through
        # the relay on this loop; blocking the loop would hold it for the socket timeout.
        await asyncio.to_thread(database.client.close)


async def test_mongodb_start_up_gives_up_naming_the_hosts_and_not_the_password(
    mongo_url: str, unique_name: str, tcp_relay: RelayStarter
) -> None:
    relay = await refusing(tcp_relay, urlsplit(mongo_url).netloc)
    url = f"mongodb://facerestore:{SECRET}@127.0.0.1:{relay.port}/?authSource=admin"
    waiting = mongo.connect_when_available(url, unique_name, StartupDeadline(1))
    await gives_up(relay, waiting, "mongodb", [SECRET, DECODED_SECRET])


def test_mongodb_addresses_leave_out_the_credentials() -> None:
    assert mongo.mongo_address("mongodb://user:pw@db-0.db:27018,db-1.db/app?replicaSet=rs0") == (
        "db-0.db:27018,db-1.db:27017"
    )
    assert mongo.mongo_address("mongodb://[::1]") == "[::1]:27017"
    assert mongo.mongo_address("mongodb+srv://user:p%40ss@cluster0.example.net/app") == "cluster0.example.net"


async def test_redis_start_up_waits_for_a_server_that_comes_up(redis_url: str, tcp_relay: RelayStarter) -> None:
    server = urlsplit(redis_url)
    relay = await refusing(tcp_relay, f"{server.hostname}:{server.port or 6379}")
    redis = Redis.from_url(through(relay, redis_url))
    try:
        await wait_through_an_outage(relay, ping_when_available(redis, StartupDeadline(120)), "redis")
        assert await redis.ping()
    finally:
        await redis.aclose()


async def test_redis_start_up_gives_up_naming_the_address_and_not_the_password(
    redis_url: str, tcp_relay: RelayStarter
) -> None:
    server = urlsplit(redis_url)
    relay = await refusing(tcp_relay, f"{server.hostname}:{server.port or 6379}")
    redis = Redis.from_url(f"redis://:{SECRET}@127.0.0.1:{relay.port}/0")
    try:
        assert redis_address(redis) == f"127.0.0.1:{relay.port}"
        await gives_up(relay, ping_when_available(redis, StartupDeadline(1)), "redis", [SECRET, DECODED_SECRET])
    finally:
        await redis.aclose()


async def test_redis_start_up_does_not_wait_out_a_refused_password(redis_url: str) -> None:
    server = urlsplit(redis_url)
    # A user the server does not know (a password alone, a passwordless Redis would accept).
    redis = Redis.from_url(f"redis://no-such-user:{SECRET}@{server.hostname}:{server.port or 6379}/0")
    try:
        with capture_logs() as logs, pytest.raises(AuthenticationError):
            await asyncio.wait_for(ping_when_available(redis, StartupDeadline(120)), SAFETY_SECONDS)
    finally:
        await redis.aclose()
    assert events(logs, "startup_dependency_unavailable") == []


async def test_storage_start_up_waits_for_a_server_that_comes_up_and_makes_the_bucket(
    s3_endpoint: str, unique_name: str, tcp_relay: RelayStarter
) -> None:
    relay = await refusing(tcp_relay, s3_endpoint)
    blobs = BlobStore(StorageSettings(s3_endpoint=f"127.0.0.1:{relay.port}", s3_bucket=unique_name))
    await wait_through_an_outage(relay, blobs.ensure_bucket(StartupDeadline(120)), "storage")
    await blobs.put("originals/a.jpg", b"bytes", "image/jpeg")
    assert await blobs.get("originals/a.jpg") == b"bytes"


async def test_storage_start_up_gives_up_naming_the_endpoint_and_not_the_keys(
    s3_endpoint: str, unique_name: str, tcp_relay: RelayStarter
) -> None:
    relay = await refusing(tcp_relay, s3_endpoint)
    access_key, secret_key = "AKIAFACERESTORETEST", "s3cret-key-0123456789"
    blobs = BlobStore(
        StorageSettings(
            s3_endpoint=f"127.0.0.1:{relay.port}",
            s3_bucket=unique_name,
            s3_access_key=SecretStr(access_key),
            s3_secret_key=SecretStr(secret_key),
        )
    )
    await gives_up(relay, blobs.ensure_bucket(StartupDeadline(1)), "storage", [access_key, secret_key])
