"""The answers of a user's own reads (their image list, one image), kept in this process's
memory and served again for the same token, path and query while the user's library generation
(facerestore_common.library_generation) is what it was when the answer was built.

History raises the generation after every write to a user's images, and the request context
reads it in the round trip it makes to Redis anyway, so a kept answer is never served after a
change it does not show. Should a raise be lost (Redis unreachable from history just then), a kept
answer is still served for at most `max_age_seconds`; an answer is kept only while the download
links it holds have most of their lifetime left, which that bound also ensures.

An answer is served only for a token this gateway has already verified (the verifier remembers
it), whose session the same round trip found not ended, and for exactly the path and query that
built it; a banned user's sessions end, and a new role comes with a new token."""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from prometheus_client import Counter
from starlette.requests import Request
from starlette.responses import Response

from facerestore_common.tokens import Principal

# (token, path, query string): an answer is served only to the token whose request built it.
CacheKey = tuple[str, str, bytes]
# Where the request context leaves a route the key and generation to keep its answer under.
PAGE_TO_KEEP = "page_to_keep"
LOOKUPS = Counter(
    "gateway_page_cache_lookups_total", "Reads the page cache was asked to answer, by whether it could", ["result"]
)
_HIT, _MISS = LOOKUPS.labels("hit"), LOOKUPS.labels("miss")
# Larger answers (an image asked for with its restored photo inline) are not worth the memory.
MAX_ANSWER_BYTES = 1024 * 1024


@dataclass(frozen=True, slots=True)
class KeptAnswer:
    generation: bytes
    kept_until: float
    body: bytes
    # The route that built it, put back in the scope when it is served (span name, metrics label).
    route: Any


class PageCache:
    def __init__(self, max_bytes: int, max_age_seconds: float) -> None:
        self._max_bytes = max_bytes
        self._max_age = max_age_seconds
        self._answers: OrderedDict[CacheKey, KeptAnswer] = OrderedDict()
        self._bytes = 0

    @property
    def enabled(self) -> bool:
        return self._max_bytes > 0 and self._max_age > 0

    @property
    def size_bytes(self) -> int:
        return self._bytes

    def lookup(self, key: CacheKey, generation: bytes) -> KeptAnswer | None:
        answer = self._answers.get(key)
        if answer is None or answer.generation != generation or answer.kept_until <= time.monotonic():
            if answer is not None:
                self._drop(key)
            _MISS.inc()
            return None
        self._answers.move_to_end(key)
        _HIT.inc()
        return answer

    def keep(self, key: CacheKey, generation: bytes, body: bytes, route: Any) -> None:
        if not self.enabled or len(body) > min(MAX_ANSWER_BYTES, self._max_bytes // 4):
            return
        self._drop(key)
        self._answers[key] = KeptAnswer(generation, time.monotonic() + self._max_age, body, route)
        self._bytes += len(body)
        while self._bytes > self._max_bytes:
            oldest = next(iter(self._answers))
            self._drop(oldest)

    def _drop(self, key: CacheKey) -> None:
        answer = self._answers.pop(key, None)
        if answer is not None:
            self._bytes -= len(answer.body)


def keep_answer(request: Request, principal: Principal, response: Response) -> Response:
    """Keep a route's 200 answer for its token's next identical request, when the request
    context read a generation for it; the answer is returned as it is."""
    to_keep = request.scope.get("state", {}).get(PAGE_TO_KEEP)
    if to_keep is not None and response.status_code == 200:
        key, generation = to_keep
        if key[0] == principal.token:
            pages: PageCache = request.app.state.page_cache
            pages.keep(key, generation, bytes(response.body), request.scope.get("route"))
    return response
