"""MongoDB connection through motor."""

from __future__ import annotations

import functools

from motor.motor_asyncio import AsyncIOMotorClient, AsyncIOMotorDatabase
from pymongo.errors import ConnectionFailure

from facerestore_common.startup_wait import StartupDeadline, wait_for_dependency

DEFAULT_PORT = 27017


def connect(url: str, database: str) -> AsyncIOMotorDatabase:
    client: AsyncIOMotorClient = AsyncIOMotorClient(url, tz_aware=True, serverSelectionTimeoutMS=5000)
    return client[database]


def _authority(url: str) -> tuple[str, str]:
    """(userinfo, hosts) of a MongoDB URL: mongodb://[userinfo@]host[:port][,host...][/db][?options]."""
    authority = url.partition("://")[2].split("/", 1)[0].split("?", 1)[0]
    userinfo, _, hosts = authority.rpartition("@")
    return userinfo, hosts


def mongo_address(url: str) -> str:
    """The hosts of a MongoDB URL, without its credentials (what logs and errors name); an SRV
    URL's name as it is."""
    hosts = _authority(url)[1]
    if url.startswith("mongodb+srv://"):
        return hosts
    return ",".join(_with_port(host) for host in hosts.split(","))


def _with_port(host: str) -> str:
    has_port = host.rpartition("]")[2].startswith(":") if host.startswith("[") else ":" in host
    return host if has_port else f"{host}:{DEFAULT_PORT}"


async def connect_when_available(url: str, database: str, deadline: StartupDeadline) -> AsyncIOMotorDatabase:
    """connect(), then wait until `deadline` for a server that answers a ping (each attempt limited
    by the client's server selection timeout); DependencyUnavailableError naming the hosts after it."""
    db = connect(url, database)
    try:
        await wait_for_dependency(
            functools.partial(db.command, "ping"),
            dependency="mongodb",
            address=mongo_address(url),
            retry_on=(ConnectionFailure,),
            deadline=deadline,
            secrets=[_authority(url)[0].partition(":")[2]],
        )
    except BaseException:
        db.client.close()
        raise
    return db


async def ping(database: AsyncIOMotorDatabase) -> bool:
    try:
        await database.command("ping")
        return True
    except Exception:
        return False
