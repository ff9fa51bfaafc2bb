"""Starting a service process: logging and tracing first, then its asyncio main."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from facerestore_common.logging import configure_logging
from facerestore_common.settings import ServiceSettings
from facerestore_common.telemetry import configure_tracing

SettingsT = TypeVar("SettingsT", bound=ServiceSettings)


def run_service(settings: SettingsT, main: Callable[[SettingsT], Coroutine[Any, Any, None]]) -> None:
    configure_logging(settings.service_name, settings.log_level)
    configure_tracing(settings.service_name)
    asyncio.run(main(settings))
