"""Which engine serves the face index: a Qdrant server when QDRANT_URL is set, otherwise the
embedded Qdrant Edge under FACE_INDEX_PATH. A Qdrant server is waited for at start-up, as the
other servers are (startup_wait), within the service's start-up deadline."""

from __future__ import annotations

from urllib.parse import urlsplit

from facerestore_common.startup_wait import StartupDeadline, host_port, wait_for_dependency
from history_service.face_index.base import FaceIndex
from history_service.face_index.tuning import DEFAULT_TUNING, EngineTuning
from history_service.settings import Settings

# qdrant-client's port for a URL that names none.
QDRANT_CLIENT_DEFAULT_PORT = 6333


class QdrantNotReadyError(ConnectionError):
    """The Qdrant server answered with a server error (it is starting or recovering)."""


async def open_face_index(
    settings: Settings,
    tuning: EngineTuning = DEFAULT_TUNING,
    *,
    background_optimize: bool = True,
    deadline: StartupDeadline | None = None,
) -> FaceIndex:
    """The face index, open. `deadline`: how long to wait for a Qdrant server that does not
    answer yet (None: not at all, its error raised at once)."""
    if settings.qdrant_url:
        from qdrant_client.http.exceptions import ResponseHandlingException, UnexpectedResponse

        from history_service.face_index.server import QdrantServerFaceIndex

        api_key = settings.qdrant_api_key.get_secret_value() if settings.qdrant_api_key else None
        server = QdrantServerFaceIndex.connect(settings.qdrant_url, api_key, settings.face_index_collection, tuning)

        async def open_server() -> None:
            try:
                await server.open()
            except UnexpectedResponse as error:
                if (error.status_code or 0) >= 500:
                    raise QdrantNotReadyError(f"HTTP {error.status_code}") from error
                raise  # a refused API key or a bad request: waiting would not mend it

        await wait_for_dependency(
            open_server,
            dependency="qdrant",
            address=qdrant_address(settings.qdrant_url),
            retry_on=(ResponseHandlingException, QdrantNotReadyError, OSError),
            deadline=deadline or StartupDeadline(0),
            secrets=[api_key or ""],
        )
        return server
    from history_service.face_index.edge import EdgeFaceIndex

    index = EdgeFaceIndex(
        settings.face_index_path, settings.face_index_collection, tuning, background_optimize=background_optimize
    )
    await index.open()
    return index


def qdrant_address(url: str) -> str:
    """host:port of a Qdrant URL, without whatever credentials it carries."""
    parts = urlsplit(url)
    return host_port(parts.hostname or "localhost", parts.port or QDRANT_CLIENT_DEFAULT_PORT)
