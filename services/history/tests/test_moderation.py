"""An owner reports a result (an `image.reported` event on the real broker); an admin hides it
pending review, so that its owner sees it under review without its pictures (links issued before
stop working) while admins' links still open it, and shows it again."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from types import SimpleNamespace

import aio_pika
import pytest

from facerestore.events.v1 import events_pb2
from facerestore_common.errors import InvalidArgument, NotFound
from facerestore_common.events import EventBus
from history_service.consumer import HistoryProjector
from history_service.grpc_api import HistoryApi
from history_service.history import History
from history_service.moderation import Moderation


@pytest.fixture
async def reported_events(bus: EventBus, unique_name: str, amqp_url: str) -> AsyncIterator[aio_pika.abc.AbstractQueue]:
    connection = await aio_pika.connect(amqp_url)
    channel = await connection.channel()
    queue = await channel.declare_queue(f"{unique_name}.reports", exclusive=True)
    await queue.bind(f"{unique_name}.events", "image.reported")
    yield queue
    await connection.close()


async def next_event(queue: aio_pika.abc.AbstractQueue) -> events_pb2.Envelope:
    for _ in range(200):
        message = await queue.get(no_ack=True, fail=False)
        if message is not None:
            return events_pb2.Envelope.FromString(message.body)
        await asyncio.sleep(0.05)
    raise AssertionError("no image.reported event")


async def restored_image(project: HistoryProjector, events: SimpleNamespace, store_renditions, owner: str) -> str:
    upload = events.uploaded("img-1", owner)
    result = events.restored("img-1", owner)
    await store_renditions(upload, result)
    await project(upload)
    await project(result)
    return "img-1"


async def test_an_owner_reports_their_result_and_the_report_is_announced(
    history: History,
    bus: EventBus,
    project: HistoryProjector,
    events: SimpleNamespace,
    store_renditions,
    reported_events: aio_pika.abc.AbstractQueue,
) -> None:
    image_id = await restored_image(project, events, store_renditions, "alice")
    moderation = Moderation(history, bus)

    await moderation.report("alice", image_id, "inappropriate", "  not my face  ")
    event = await next_event(reported_events)
    assert event.type == "image.reported" and event.producer == "history"
    assert (event.image_reported.image_id, event.image_reported.user_id) == (image_id, "alice")
    assert (event.image_reported.reason, event.image_reported.note) == ("inappropriate", "not my face")
    assert event.image_reported.reported_at.seconds > 0
    item = await history.items.get(image_id)
    assert item is not None and item.reports == 1

    with pytest.raises(NotFound):
        await moderation.report("bob", image_id, "inappropriate", "")  # someone else's image
    with pytest.raises(InvalidArgument):
        await moderation.report("alice", image_id, "boring", "")
    with pytest.raises(InvalidArgument):
        await moderation.report("alice", image_id, "other", "x" * 501)
    item = await history.items.get(image_id)
    assert item is not None and item.reports == 1


async def test_a_hidden_image_shows_under_review_without_pictures_to_its_owner(
    history: History, bus: EventBus, project: HistoryProjector, events: SimpleNamespace, store_renditions
) -> None:
    image_id = await restored_image(project, events, store_renditions, "alice")
    api = HistoryApi(history, moderation=Moderation(history, bus))
    moderation = Moderation(history, bus)
    item = await history.items.get(image_id)
    assert item is not None
    owners_link = api._message(item).restored_token
    assert (await history.content(owners_link))[0]

    hidden = await moderation.set_hidden(image_id, True, "reported as inappropriate")
    assert hidden.under_review
    seen_by_owner = api._message(hidden)
    assert seen_by_owner.under_review and seen_by_owner.status == "done"
    assert (seen_by_owner.original_token, seen_by_owner.thumbnail_token, seen_by_owner.restored_token) == ("", "", "")
    with pytest.raises(NotFound):
        await history.content(owners_link)  # a link issued before the image was hidden
    seen_by_admin = api._message(hidden, for_admin=True)
    assert seen_by_admin.under_review and seen_by_admin.restored_token
    assert (await history.content(seen_by_admin.restored_token))[0]

    shown = await moderation.set_hidden(image_id, False, "nothing wrong")
    assert not shown.under_review
    assert api._message(shown).restored_token
    assert (await history.content(owners_link))[0]
    with pytest.raises(NotFound):
        await moderation.set_hidden("no-such-image", True, "")
