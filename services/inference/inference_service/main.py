"""Wiring and start-up of the inference worker; SIGTERM stops consuming, lets the
message in hand finish, then exits (unfinished messages are redelivered)."""

from __future__ import annotations

import asyncio
import signal

from prometheus_client import start_http_server

from facerestore_common import mongo
from facerestore_common.bootstrap import run_service
from facerestore_common.events import EventBus, ProcessedEvents
from facerestore_common.logging import get_logger
from facerestore_common.storage import BlobStore
from facerestore_common.topology import CONSUMER_BINDINGS
from inference_service.models import choose_analyzer, choose_restorer
from inference_service.pipeline import RestorationPipeline
from inference_service.restoration.batching import BatchingRestorer
from inference_service.restoration.classical import ClassicalRestorer
from inference_service.settings import Settings
from inference_service.worker import RestorationWorker

log = get_logger(__name__)


async def work(settings: Settings) -> None:
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
    analyzer, analyzer_choice = choose_analyzer(settings)
    log.info("restorer_chosen", restorer=restorer_choice.name, model=restorer.model_id, why=restorer_choice.reason)
    log.info("face_analyzer_chosen", analyzer=analyzer_choice.name, model=analyzer.model_id, why=analyzer_choice.reason)
    if restorer_choice.name == "gfpgan":
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
    if settings.metrics_port:
        start_http_server(settings.metrics_port, addr=settings.metrics_host)
    log.info("inference_ready", restorer=restorer.name, analyzer=analyzer.model_id)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("inference_stopping")
    await bus.stop_consuming(settings.shutdown_grace_seconds)
    await bus.close()
    database.client.close()
    log.info("inference_stopped")


def run() -> None:
    run_service(Settings(), work)


if __name__ == "__main__":
    run()
