"""Expired Idempotency-Key claims, removed in the background so that the collections stay the
size of a day's keyed requests."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from facerestore_common.logging import get_logger
from upload_service.idempotency import IdempotencyKeys

log = get_logger(__name__)


async def purge_expired_keys_forever(kinds: Sequence[IdempotencyKeys], interval_seconds: float) -> None:
    while True:
        for keys in kinds:
            try:
                purged = await keys.purge_expired()
            except Exception:
                log.error("idempotency_key_purge_failed", subject=keys.subject, exc_info=True)
            else:
                if purged:
                    log.info("idempotency_keys_purged", subject=keys.subject, purged=purged)
        await asyncio.sleep(interval_seconds)
