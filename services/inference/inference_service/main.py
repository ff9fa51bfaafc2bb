"""Wiring and start-up of the inference worker; SIGTERM stops consuming, lets the
message in hand finish, then exits (unfinished messages are redelivered)."""

from __future__ import annotations

import asyncio
import signal
from dataclasses import dataclass

from motor.motor_asyncio import AsyncIOMotorDatabase
from redis.asyncio import Redis

from facerestore_common import mongo
from facerestore_common.bootstrap import run_service
from facerestore_common.events import EventBus, ProcessedEvents
from facerestore_common.health import LoopHeartbeat
from facerestore_common.logging import get_logger
from facerestore_common.metrics_server import serve_metrics
from facerestore_common.model_registry import ModelRegistry
from facerestore_common.startup_wait import StartupDeadline
from facerestore_common.storage import BlobStore
from facerestore_common.topology import CONSUMER_BINDINGS, LEGACY_INFERENCE_CONSUMER, inference_consumer
from inference_service.analysis.base import FaceAnalyzer
from inference_service.announcer import OfferAnnouncer, default_worker_id
from inference_service.embedding_responder import EmbeddingResponder
from inference_service.models import choose_analyzer, choose_restorers, offer_of
from inference_service.pipeline import RestorationPipeline
from inference_service.probes import WorkerProbes
from inference_service.restoration.base import Restorer
from inference_service.restoration.batching import BatchingRestorer
from inference_service.restoration.classical import ClassicalRestorer
from inference_service.restoration.face_network import FaceNetworkRestorer
from inference_service.settings import Settings
from inference_service.worker import RestorationWorker

log = get_logger(__name__)

# What the queue of the single inference consumer was bound to before per-family queues.
LEGACY_ROUTING_KEYS = ("image.uploaded",)


@dataclass
class Restoration:
    """The restore role's connections, closed at shutdown."""

    bus: EventBus
    database: AsyncIOMotorDatabase
    announcer: OfferAnnouncer
    redis: Redis

    async def stop(self, grace_seconds: float) -> None:
        await self.announcer.stop()
        await self.bus.stop_consuming(grace_seconds)
        await self.bus.close()
        self.database.client.close()
        await self.redis.aclose()


async def start_restoration(settings: Settings, analyzer: FaceAnalyzer) -> Restoration:
    """The restore role: consume the queue of every restorer family served, restore, store,
    publish the outcome; announce the families in the model registry."""
    served = choose_restorers(settings)
    for model in served.values():
        log.info("restorer_chosen", family=model.family, model=model.restorer.model_id, why=model.reason)
    offers = {family: offer_of(model) for family, model in served.items()}
    pipelines: dict[str, RestorationPipeline] = {}
    for family, model in served.items():
        restorer: Restorer = model.restorer
        if isinstance(restorer, FaceNetworkRestorer):
            restorer = BatchingRestorer(restorer, settings.restore_batch_size, settings.restore_batch_window_ms / 1000)
        pipelines[family] = RestorationPipeline(
            restorer, analyzer, ClassicalRestorer(), settings.thumbnail_max_side, settings.output_jpeg_quality
        )
    # The models are loaded: from here on start-up waits for S3 and the broker.
    deadline = StartupDeadline(settings.startup_wait_seconds)
    blobs = BlobStore(settings)
    await blobs.ensure_bucket(deadline)
    database = mongo.connect(settings.mongo_url, settings.mongo_database)
    bus = EventBus(
        settings.amqp_url.get_secret_value(),
        settings.events_exchange,
        settings.queue_prefix,
        "inference",
        topology=CONSUMER_BINDINGS,
        startup_deadline=deadline,
    )
    await bus.connect()
    # Events without options (published before them) are restored by the best family served.
    default_family = next(iter(served))
    worker = RestorationWorker(blobs, bus, pipelines, offers, default_family)
    consumers = {inference_consumer(family): CONSUMER_BINDINGS[inference_consumer(family)] for family in served}
    if await bus.queue_exists(LEGACY_INFERENCE_CONSUMER):
        # Left by a release before per-family queues: drained here until an operator deletes it.
        log.warning("legacy_queue_drained", queue=bus.queue_name(LEGACY_INFERENCE_CONSUMER), family=default_family)
        consumers[LEGACY_INFERENCE_CONSUMER] = LEGACY_ROUTING_KEYS
    processed = ProcessedEvents(database["processed_events"], "inference")
    for consumer, routing_keys in consumers.items():
        await bus.consume(
            consumer,
            routing_keys,
            worker,
            processed,
            settings.consumer_prefetch,
            max_attempts=settings.max_attempts,
            retry_base_seconds=settings.retry_base_seconds,
            retry_max_seconds=settings.retry_max_seconds,
            max_unfinished_deliveries=settings.max_unfinished_deliveries,
            on_give_up=worker.give_up,
        )
    redis = Redis.from_url(settings.redis_url)
    announcer = OfferAnnouncer(
        ModelRegistry(redis, settings.redis_key_prefix, settings.model_announce_ttl_seconds),
        settings.worker_id or default_worker_id(),
        list(offers.values()),
        group=settings.worker_group,
        standby_seconds=settings.standby_offer_seconds,
    )
    await announcer.start()
    log.info("restoration_consuming", families=list(served), queues=[bus.queue_name(name) for name in consumers])
    return Restoration(bus, database, announcer, redis)


async def work(settings: Settings) -> None:
    # First of all: a SIGTERM that comes while the worker is still starting (and may already
    # hold messages) must stop it gracefully too, not kill it.
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    heartbeat = LoopHeartbeat()
    beating = asyncio.create_task(heartbeat.run())
    probes = WorkerProbes(
        heartbeat, settings.liveness_max_loop_stall_seconds, settings.liveness_max_message_hold_seconds
    )
    # Up before the models load, so that the startup probe sees "not ready yet", not a refused connection.
    metrics = serve_metrics(settings, probes.endpoints())
    analyzer, analyzer_choice = choose_analyzer(settings)
    log.info("face_analyzer_chosen", analyzer=analyzer_choice.name, model=analyzer.model_id, why=analyzer_choice.reason)
    # An embed-only worker never loads the restorer and never takes image.uploaded.
    restoration = await start_restoration(settings, analyzer) if "restore" in settings.roles else None
    if restoration is not None:
        probes.add("restore", restoration.bus)
    responder: EmbeddingResponder | None = None
    if "embed" in settings.roles:
        responder = EmbeddingResponder(
            settings.amqp_url.get_secret_value(),
            settings.queue_prefix,
            analyzer,
            settings.consumer_prefetch,
            startup_deadline=StartupDeadline(settings.startup_wait_seconds),
        )
        await responder.start()
        probes.add("embed", responder)
    probes.started()
    log.info("inference_ready", roles=settings.inference_roles, analyzer=analyzer.model_id)
    await stop.wait()
    log.info("inference_stopping")
    if responder is not None:
        await responder.stop(settings.shutdown_grace_seconds)
    if restoration is not None:
        await restoration.stop(settings.shutdown_grace_seconds)
    beating.cancel()
    if metrics is not None:
        metrics.close()
    log.info("inference_stopped")


def run() -> None:
    run_service(Settings(), work)


if __name__ == "__main__":
    run()
