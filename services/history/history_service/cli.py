"""Operator commands of the history service.

    python -m history_service.cli reindex              # rebuild the face index from MongoDB
    python -m history_service.cli reindex --re-embed   # embed every original again, then index

Both read the same settings (environment) as the service. With the embedded index (no
QDRANT_URL) the service must be stopped first: only one process can open the index. Against
a Qdrant server the service may keep running; searches see a partial index until the rebuild
ends. `--re-embed` needs a running embedder (the inference side's embed role) and replaces
the stored faces of every restored image with the embedder's current analyser model."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from dataclasses import asdict
from typing import Any

from redis.asyncio import Redis

from facerestore_common import mongo
from facerestore_common.library_generation import LibraryGenerations
from facerestore_common.logging import configure_logging
from facerestore_common.storage import BlobStore
from history_service.embedding_client import EmbeddingClient
from history_service.face_index import FaceIndexBusy, open_face_index
from history_service.faces import FaceRepository
from history_service.indexing import FaceIndexer
from history_service.items import ItemRepository
from history_service.settings import Settings
from history_service.tracked_items import tracked_items


async def reindex(settings: Settings, *, re_embed: bool) -> dict[str, Any]:
    database = mongo.connect(settings.mongo_url, settings.mongo_database)
    # Connects only if an item is written (a rebuild writes none).
    redis = Redis.from_url(settings.redis_url, socket_timeout=1.0, socket_connect_timeout=1.0)
    index = await open_face_index(settings, background_optimize=False)
    try:
        items = ItemRepository(tracked_items(database, LibraryGenerations(redis, settings.redis_key_prefix)))
        indexer = FaceIndexer(items, FaceRepository(database), index)
        if not re_embed:
            return asdict(await indexer.rebuild())
        embedder = EmbeddingClient(
            settings.amqp_url.get_secret_value(), settings.queue_prefix, settings.embed_timeout_seconds
        )
        try:
            return asdict(await indexer.re_embed(BlobStore(settings), embedder))
        finally:
            await embedder.close()
    finally:
        await index.close()
        await redis.aclose()
        database.client.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="history_service.cli", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    command = commands.add_parser("reindex", help="rebuild the face index from MongoDB")
    command.add_argument(
        "--re-embed",
        action="store_true",
        help="embed every restored image's original again (after an analyser model change), then index",
    )
    args = parser.parse_args(argv)
    settings = Settings()
    configure_logging(f"{settings.service_name}-cli", settings.log_level)
    try:
        report = asyncio.run(reindex(settings, re_embed=args.re_embed))
    except FaceIndexBusy as error:
        print(f"reindex: {error}; stop the history service first", file=sys.stderr)
        return 2
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
