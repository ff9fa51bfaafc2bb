"""Wiring and start-up of the inference worker; SIGTERM stops consuming, lets the
message in hand finish, then exits (unfinished messages are redelivered)."""

from __future__ import annotations

import asyncio
import signal
from dataclasses import dataclass

from motor.motor_asyncio import AsyncIOMotorDatabase

from facerestore_common import mongo
from facerestore_common.bootstrap import run_service
from facerestore_common.events import EventBus, ProcessedEvents
from facerestore_common.health import LoopHeartbeat
from facerestore_common.logging import get_logger
from facerestore_common.metrics_server import serve_metrics
from facerestore_common.storage import BlobStore
from facerestore_common.topology import CONSUMER_BINDINGS
from inference_service.analysis.base import FaceAnalyzer
from inference_service.embedding_responder import EmbeddingResponder
from inference_service.models import choose_analyzer, choose_restorer
from inference_service.pipeline import RestorationPipeline
from inference_service.probes import WorkerProbes
from inference_service.restoration.batching import BatchingRestorer
from inference_service.restoration.classical import ClassicalRestorer
from inference_service.settings import Settings
from inference_service.worker import RestorationWorker

log = get_logger(__name__)


@dataclass
class Restoration:
    """The restore role's connections, closed at shutdown."""

    bus: EventBus
    database: AsyncIOMotorDatabase

    async def stop(self, grace_seconds: float) -> None:
        await self.bus.stop_consuming(grace_seconds)
        await self.bus.close()
        self.database.client.close()


async def start_restoration(settings: Settings, analyzer: FaceAnalyzer) -> Restoration:
    """The restore role: consume image.uploaded, restore, store, publish the outcome."""
    blobs = BlobStore(settings)
    await blobs.ensure_bucket()
    database = mongo.connect(settings.mongo_url, settings.mongo_database)
    bus = EventBus(
        settings.amqp_url.get_secret_value(),
        settings.events_exchange,
        settings.queue_prefix,
        "inference",
        topology=CONSUMER_BINDINGS,
    )
    await bus.connect()
    restorer, restorer_choice = choose_restorer(settings)
    log.info("restorer_chosen", restorer=restorer_choice.name, model=restorer.model_id, why=restorer_choice.reason)
    if restorer_choice.name in ("gfpgan", "codeformer"):
        restorer = BatchingRestorer(restorer, settings.restore_batch_size, settings.restore_batch_window_ms / 1000)
    pipeline = RestorationPipeline(
        restorer, analyzer, ClassicalRestorer(), settings.thumbnail_max_side, settings.output_jpeg_quality
    )
    worker = RestorationWorker(blobs, bus, pipeline)
    await bus.consume(
        "inference",
        CONSUMER_BINDINGS["inference"],
        worker,
        ProcessedEvents(database["processed_events"], "inference"),
        settings.consumer_prefetch,
        max_attempts=settings.max_attempts,
        retry_base_seconds=settings.retry_base_seconds,
        retry_max_seconds=settings.retry_max_seconds,
        max_unfinished_deliveries=settings.max_unfinished_deliveries,
        on_give_up=worker.give_up,
    )
    return Restoration(bus, database)


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
            settings.amqp_url.get_secret_value(), settings.queue_prefix, analyzer, settings.consumer_prefetch
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
