"""Ended sessions, read in the same Redis round trip as the per-IP limit.

The request context cannot verify a token (that needs the route's dependencies), but it can read
the session id a token names and ask Redis whether that session has ended, together with
counting the request. The token verifier then takes that answer for the session id it verified,
and asks Redis itself only when there was none (Redis down, or a token naming another session)."""

from __future__ import annotations

import base64
import binascii
import json
import re
from contextvars import ContextVar

from facerestore_common.revocation import SessionRevocations

_SESSION_ID = re.compile(r"[A-Za-z0-9_-]{1,128}")
_MAX_PAYLOAD = 4096

# (session id, ended) as read for the current request.
_prefetched: ContextVar[tuple[str, bool] | None] = ContextVar("prefetched_session", default=None)


def unverified_session_id(authorization: bytes) -> str | None:
    """The `sid` claim of a bearer token, read without checking anything else about it."""
    scheme, _, token = authorization.partition(b" ")
    if scheme.lower() != b"bearer":
        return None
    parts = token.strip().split(b".")
    if len(parts) != 3 or len(parts[1]) > _MAX_PAYLOAD:
        return None
    try:
        claims = json.loads(base64.urlsafe_b64decode(parts[1] + b"=" * (-len(parts[1]) % 4)))
    except (ValueError, binascii.Error):
        return None
    session_id = claims.get("sid") if isinstance(claims, dict) else None
    return session_id if isinstance(session_id, str) and _SESSION_ID.fullmatch(session_id) else None


class PrefetchedRevocations(SessionRevocations):
    def key(self, session_id: str) -> str:
        return self._key(session_id)

    @staticmethod
    def remember(session_id: str, ended: bool) -> None:
        _prefetched.set((session_id, ended))

    async def is_revoked(self, session_id: str) -> bool:
        known = _prefetched.get()
        if known is not None and known[0] == session_id:
            return known[1]
        return await super().is_revoked(session_id)
