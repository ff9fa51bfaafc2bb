"""Reading and deleting history over real Mongo, S3 and RabbitMQ: pages, ownership, deletes
that leave nothing behind and are announced, download links, and the admin's numbers."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from types import SimpleNamespace
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import aio_pika
import jwt
import pytest

from facerestore.events.v1 import events_pb2
from facerestore_common.errors import NotFound
from facerestore_common.events import EventBus
from facerestore_common.storage import BlobStore
from history_service.consumer import HistoryProjector
from history_service.downloads import DownloadTokens
from history_service.face_index.edge import EdgeFaceIndex
from history_service.faces import FaceRepository
from history_service.history import History
from history_service.items import ItemRepository
from history_service.library import Library

if TYPE_CHECKING:
    from conftest import TcpRelay

ALICE = "user-alice"
BOB = "user-bob"
BASE_MS = 1_700_000_000_000

StoreRenditions = Callable[[events_pb2.Envelope, events_pb2.Envelope], Awaitable[dict[str, bytes]]]


async def read_events(
    amqp_url: str, queue_name: str, expected: int, wait_seconds: float = 10.0
) -> list[events_pb2.Envelope]:
    """Take `expected` messages off a queue (or as many as arrive before the timeout)."""
    received: list[events_pb2.Envelope] = []
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel()
        queue = await channel.get_queue(queue_name, ensure=True)
        deadline = time.monotonic() + wait_seconds
        while len(received) < expected and time.monotonic() < deadline:
            message = await queue.get(no_ack=True, fail=False)
            if message is None:
                await asyncio.sleep(0.05)
                continue
            assert message.routing_key == message.type
            received.append(events_pb2.Envelope.FromString(message.body))
    return received


async def add_done_image(
    project: HistoryProjector, events: SimpleNamespace, image_id: str, user_id: str, created_at_ms: int = BASE_MS
) -> tuple[events_pb2.Envelope, events_pb2.Envelope]:
    upload = events.uploaded(image_id, user_id, created_at_ms=created_at_ms)
    result = events.restored(image_id, user_id)
    await project(upload)
    await project(events.processing(image_id, user_id))
    await project(result)
    return upload, result


# --- listing -------------------------------------------------------------------------------------


async def test_listing_is_newest_first_and_cursor_pages_cover_every_item_once(
    project: HistoryProjector, items: ItemRepository, events: SimpleNamespace
) -> None:
    # Uploaded out of creation order, with Bob's images in between.
    offsets = {"a": 3, "b": 1, "c": 5, "d": 2, "e": 4}
    for name, offset in offsets.items():
        await project(events.uploaded(f"alice-{name}", ALICE, created_at_ms=BASE_MS + offset * 1000))
        await project(events.uploaded(f"bob-{name}", BOB, created_at_ms=BASE_MS + offset * 1000 + 500))
    # A stub made by an event for an image never uploaded has no place in any page.
    await project(events.processing("alice-stub", ALICE))

    pages: list[list[str]] = []
    cursor = ""
    while True:
        page, cursor = await items.list(2, cursor, ALICE)
        pages.append([item.id for item in page])
        if not cursor:
            break

    assert pages == [["alice-c", "alice-e"], ["alice-a", "alice-d"], ["alice-b"]]


async def test_a_page_that_ends_exactly_at_the_last_item_has_no_next_cursor(
    project: HistoryProjector, items: ItemRepository, events: SimpleNamespace
) -> None:
    for index in range(2):
        await project(events.uploaded(f"img-{index}", ALICE, created_at_ms=BASE_MS + index))

    page, cursor = await items.list(2, "", ALICE)

    assert [item.id for item in page] == ["img-1", "img-0"]
    assert cursor == ""


async def test_items_created_in_the_same_millisecond_are_all_listed_across_pages(
    project: HistoryProjector, items: ItemRepository, events: SimpleNamespace
) -> None:
    ids = [f"same-{index}" for index in range(5)]
    for image_id in ids:
        await project(events.uploaded(image_id, ALICE, created_at_ms=BASE_MS))

    seen: list[str] = []
    cursor = ""
    while True:
        page, cursor = await items.list(2, cursor, ALICE)
        seen.extend(item.id for item in page)
        if not cursor:
            break

    assert seen == sorted(ids, reverse=True)


async def test_admin_listing_without_a_user_shows_everyones_images_newest_first(
    project: HistoryProjector, items: ItemRepository, events: SimpleNamespace
) -> None:
    await project(events.uploaded("alice-old", ALICE, created_at_ms=BASE_MS))
    await project(events.uploaded("bob-new", BOB, created_at_ms=BASE_MS + 10))

    page, cursor = await items.list(10, "", None)

    assert [(item.id, item.user_id) for item in page] == [("bob-new", BOB), ("alice-old", ALICE)]
    assert cursor == ""


# --- ownership -----------------------------------------------------------------------------------


async def test_a_user_gets_their_own_image(
    project: HistoryProjector, history: History, events: SimpleNamespace
) -> None:
    await project(events.uploaded("alice-1", ALICE, note="mine"))

    item = await history.get_own(ALICE, "alice-1")

    assert item.id == "alice-1"
    assert item.note == "mine"


async def test_another_users_image_looks_missing(
    project: HistoryProjector, history: History, events: SimpleNamespace
) -> None:
    await project(events.uploaded("alice-1", ALICE))

    with pytest.raises(NotFound) as raised:
        await history.get_own(BOB, "alice-1")
    assert raised.value.reason == "not-found"
    with pytest.raises(NotFound):
        await history.get_own(BOB, "no-such-image")
    listed, _ = await history.items.list(10, "", BOB)
    assert listed == []


# --- delete --------------------------------------------------------------------------------------


async def test_delete_removes_every_blob_and_announces_image_deleted(
    project: HistoryProjector,
    history: History,
    blobs: BlobStore,
    bus: EventBus,
    amqp_url: str,
    events: SimpleNamespace,
    store_renditions: StoreRenditions,
) -> None:
    await bus.declare_queue("probe", ["image.deleted"])
    upload, result = await add_done_image(project, events, "alice-1", ALICE)
    contents = await store_renditions(upload, result)
    assert len(contents) == 4
    assert all([await blobs.exists(key) for key in contents])

    deleted = await history.delete("alice-1", owner_id=ALICE, deleted_by="user")

    assert deleted.id == "alice-1"
    assert sorted(deleted.blob_keys()) == sorted(contents)
    for key in contents:
        assert not await blobs.exists(key), key
    assert await history.items.get("alice-1") is None
    with pytest.raises(NotFound):
        await history.get_own(ALICE, "alice-1")

    announced = await read_events(amqp_url, bus.queue_name("probe"), expected=1)
    assert len(announced) == 1
    envelope = announced[0]
    assert envelope.type == "image.deleted"
    assert envelope.producer == "history"
    assert envelope.WhichOneof("payload") == "image_deleted"
    # What the four files took in the bucket.
    freed = sum(len(data) for data in contents.values())
    assert envelope.image_deleted == events_pb2.ImageDeleted(
        image_id="alice-1", user_id=ALICE, deleted_by="user", freed_bytes=freed
    )


async def test_admin_delete_of_any_users_image_is_announced_as_by_admin(
    project: HistoryProjector, history: History, bus: EventBus, amqp_url: str, events: SimpleNamespace
) -> None:
    await bus.declare_queue("probe", ["image.deleted"])
    await project(events.uploaded("alice-1", ALICE))

    deleted = await history.delete("alice-1", owner_id=None, deleted_by="admin")

    assert deleted.user_id == ALICE
    announced = await read_events(amqp_url, bus.queue_name("probe"), expected=1)
    assert [e.image_deleted for e in announced] == [
        # Its files never reached the bucket: nothing freed, and said so.
        events_pb2.ImageDeleted(image_id="alice-1", user_id=ALICE, deleted_by="admin", freed_bytes=0)
    ]


async def test_deleting_twice_is_not_found_and_announced_once(
    project: HistoryProjector, history: History, bus: EventBus, amqp_url: str, events: SimpleNamespace
) -> None:
    await bus.declare_queue("probe", ["image.deleted"])
    await project(events.uploaded("alice-1", ALICE))
    await history.delete("alice-1", owner_id=ALICE, deleted_by="user")

    with pytest.raises(NotFound):
        await history.delete("alice-1", owner_id=ALICE, deleted_by="user")
    with pytest.raises(NotFound):
        await history.delete("alice-1", owner_id=None, deleted_by="admin")

    announced = await read_events(amqp_url, bus.queue_name("probe"), expected=2, wait_seconds=1.5)
    assert len(announced) == 1


async def connection_becomes(bus: EventBus, connected: bool, seconds: float = 10.0) -> bool:
    for _ in range(int(seconds / 0.05)):
        if bus.is_connected() == connected:
            return True
        await asyncio.sleep(0.05)
    return False


async def test_a_delete_while_the_broker_reconnects_stands_and_is_announced_once_it_is_back(
    project: HistoryProjector,
    items: ItemRepository,
    blobs: BlobStore,
    downloads: DownloadTokens,
    faces: FaceRepository,
    face_index: EdgeFaceIndex,
    bus: EventBus,
    amqp_url: str,
    unique_name: str,
    events: SimpleNamespace,
    store_renditions: StoreRenditions,
    tcp_relay: Callable[[str], Awaitable[TcpRelay]],
) -> None:
    await bus.declare_queue("probe", ["image.deleted"])
    broker = urlsplit(amqp_url)
    relay = await tcp_relay(f"{broker.hostname}:{broker.port or 5672}")
    relayed = broker._replace(netloc=f"{broker.username}:{broker.password}@127.0.0.1:{relay.port}").geturl()
    reconnecting = EventBus(f"{relayed}?reconnect_interval=0.3", f"{unique_name}.events", unique_name, "history")
    await reconnecting.connect()
    history = History(items, blobs, reconnecting, downloads, faces=faces, face_index=face_index)
    try:
        upload, result = await add_done_image(project, events, "alice-1", ALICE)
        contents = await store_renditions(upload, result)
        await relay.cut()
        assert await connection_becomes(reconnecting, connected=False)

        deleted = await history.delete("alice-1", owner_id=ALICE, deleted_by="user")

        # The delete stands at once, files included; only its announcement waits for the broker.
        assert deleted.id == "alice-1"
        with pytest.raises(NotFound):
            await history.get_own(ALICE, "alice-1")
        for key in contents:
            assert not await blobs.exists(key), key
        assert await read_events(amqp_url, bus.queue_name("probe"), expected=1, wait_seconds=0.5) == []

        await relay.restore()
        assert await connection_becomes(reconnecting, connected=True)
        library = Library(history, blobs, reconnecting)
        assert await library.purge_pending() == 1
        assert await library.purge_pending() == 0
    finally:
        await reconnecting.close()

    announced = await read_events(amqp_url, bus.queue_name("probe"), expected=2, wait_seconds=1.5)
    # The files were gone when the purge was finished: it announces what they took before.
    freed = sum(len(data) for data in contents.values())
    assert [envelope.image_deleted for envelope in announced] == [
        events_pb2.ImageDeleted(image_id="alice-1", user_id=ALICE, deleted_by="user", freed_bytes=freed)
    ]


async def test_a_user_cannot_delete_another_users_image(
    project: HistoryProjector,
    history: History,
    blobs: BlobStore,
    events: SimpleNamespace,
    store_renditions: StoreRenditions,
) -> None:
    upload, result = await add_done_image(project, events, "alice-1", ALICE)
    contents = await store_renditions(upload, result)

    with pytest.raises(NotFound):
        await history.delete("alice-1", owner_id=BOB, deleted_by="user")

    assert (await history.get_own(ALICE, "alice-1")).status == "done"
    for key in contents:
        assert await blobs.exists(key), key


# --- download content ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "key_of", "content_type"),
    [
        ("original", lambda up, res: up.image_uploaded.original_key, "image/jpeg"),
        ("thumbnail", lambda up, res: res.image_restored.original_thumbnail_key, "image/jpeg"),
        ("restored", lambda up, res: res.image_restored.restored_key, "image/png"),
    ],
)
async def test_content_returns_the_renditions_bytes_and_type(
    project: HistoryProjector,
    history: History,
    events: SimpleNamespace,
    store_renditions: StoreRenditions,
    kind: str,
    key_of: Callable[[events_pb2.Envelope, events_pb2.Envelope], str],
    content_type: str,
) -> None:
    upload, result = await add_done_image(project, events, "alice-1", ALICE)
    contents = await store_renditions(upload, result)

    data, served_type = await history.content(history.downloads.issue("alice-1", kind))

    assert data == contents[key_of(upload, result)]
    assert served_type == content_type


async def test_content_of_a_result_not_made_yet_is_not_found(
    project: HistoryProjector, history: History, blobs: BlobStore, events: SimpleNamespace
) -> None:
    upload = events.uploaded("alice-1", ALICE)
    await blobs.put(upload.image_uploaded.original_key, b"jpeg bytes", "image/jpeg")
    await project(upload)

    assert (await history.content(history.downloads.issue("alice-1", "original")))[0] == b"jpeg bytes"
    with pytest.raises(NotFound):
        await history.content(history.downloads.issue("alice-1", "restored"))
    with pytest.raises(NotFound):
        await history.content(history.downloads.issue("alice-1", "thumbnail"))


async def test_content_is_not_found_after_the_image_is_deleted(
    project: HistoryProjector, history: History, events: SimpleNamespace, store_renditions: StoreRenditions
) -> None:
    upload, result = await add_done_image(project, events, "alice-1", ALICE)
    await store_renditions(upload, result)
    tokens = {kind: history.downloads.issue("alice-1", kind) for kind in ("original", "thumbnail", "restored")}
    assert (await history.content(tokens["restored"]))[0]

    await history.delete("alice-1", owner_id=ALICE, deleted_by="user")

    for token in tokens.values():
        with pytest.raises(NotFound):
            await history.content(token)


async def test_content_is_not_found_when_the_blob_is_missing(
    project: HistoryProjector, history: History, events: SimpleNamespace
) -> None:
    await project(events.uploaded("alice-1", ALICE))  # recorded, but the original never reached the bucket

    with pytest.raises(NotFound):
        await history.content(history.downloads.issue("alice-1", "original"))


async def test_content_refuses_a_forged_token(
    project: HistoryProjector, history: History, events: SimpleNamespace, store_renditions: StoreRenditions
) -> None:
    upload, result = await add_done_image(project, events, "alice-1", ALICE)
    await store_renditions(upload, result)
    forged = DownloadTokens("an-attackers-guess-at-the-secret-0123456789", 900).issue("alice-1", "original")

    with pytest.raises(NotFound):
        await history.content(forged)
    with pytest.raises(NotFound):
        await history.content("not-a-token")


async def test_content_refuses_an_expired_token(
    project: HistoryProjector,
    history: History,
    events: SimpleNamespace,
    store_renditions: StoreRenditions,
    download_secret: str,
) -> None:
    upload, result = await add_done_image(project, events, "alice-1", ALICE)
    await store_renditions(upload, result)
    now = int(time.time())
    valid = history.downloads.issue("alice-1", "original")
    # The same claims the service issues, signed with the same secret, but an hour old.
    claims = jwt.decode(valid, options={"verify_signature": False})
    expired_claims = {**claims, "iat": now - 3600, "exp": now - 2700}
    expired = jwt.encode(expired_claims, download_secret, algorithm="HS256")

    assert (await history.content(valid))[0]
    with pytest.raises(NotFound):
        await history.content(expired)


async def test_content_refuses_a_token_whose_ttl_has_run_out(
    project: HistoryProjector,
    items: ItemRepository,
    blobs: BlobStore,
    bus: EventBus,
    events: SimpleNamespace,
    store_renditions: StoreRenditions,
) -> None:
    short_lived = History(items, blobs, bus, DownloadTokens("short-lived-download-secret-0123456789ab", ttl_seconds=1))
    upload, result = await add_done_image(project, events, "alice-1", ALICE)
    await store_renditions(upload, result)
    token = short_lived.downloads.issue("alice-1", "restored")
    assert (await short_lived.content(token))[1] == "image/png"

    await asyncio.sleep(2.1)

    with pytest.raises(NotFound):
        await short_lived.content(token)


# --- stats ---------------------------------------------------------------------------------------


async def test_stats_count_by_status_and_average_the_results(
    project: HistoryProjector, history: History, items: ItemRepository, events: SimpleNamespace
) -> None:
    await project(events.uploaded("queued-1", ALICE))
    await project(events.uploaded("processing-1", ALICE))
    await project(events.processing("processing-1", ALICE))
    await project(events.uploaded("done-1", ALICE))
    await project(
        events.restored("done-1", ALICE, faces=2, sharpness_before=50.0, sharpness_after=100.0, duration_ms=100.0)
    )
    await project(events.uploaded("done-2", BOB))
    await project(
        events.restored("done-2", BOB, faces=3, sharpness_before=25.0, sharpness_after=100.0, duration_ms=300.0)
    )
    await project(events.uploaded("failed-1", BOB))
    await project(events.failed("failed-1", BOB, reason="undecodable"))
    # Neither a deleted image nor an event-only stub counts.
    await project(events.uploaded("deleted-1", BOB))
    await project(events.restored("deleted-1", BOB, faces=10, sharpness_before=1.0, sharpness_after=100.0))
    await history.delete("deleted-1", owner_id=BOB, deleted_by="user")
    await project(events.processing("stub-1", BOB))

    stats = await items.stats()

    assert stats == {
        "images_total": 5,
        "images_by_status": {"queued": 1, "processing": 1, "done": 2, "failed": 1},
        "faces_total": 5,
        "mean_sharpness_gain": pytest.approx(3.0),
        "mean_duration_ms": pytest.approx(200.0),
    }


async def test_stats_of_an_empty_history_are_zero(items: ItemRepository) -> None:
    assert await items.stats() == {
        "images_total": 0,
        "images_by_status": {},
        "faces_total": 0,
        "mean_sharpness_gain": 0.0,
        "mean_duration_ms": 0.0,
    }
