"""Short-lived download tokens: the capability that an image URL carries."""

from __future__ import annotations

import time
from dataclasses import dataclass

import jwt

from facerestore_common.errors import NotFound

KINDS = ("original", "thumbnail", "restored")
_AUDIENCE = "facerestore-download"


@dataclass(frozen=True)
class DownloadGrant:
    image_id: str
    kind: str


class DownloadTokens:
    def __init__(self, secret: str, ttl_seconds: int) -> None:
        self._secret = secret
        self._ttl = ttl_seconds

    def issue(self, image_id: str, kind: str) -> str:
        now = int(time.time())
        claims = {"img": image_id, "kind": kind, "aud": _AUDIENCE, "iat": now, "exp": now + self._ttl}
        return jwt.encode(claims, self._secret, algorithm="HS256")

    def read(self, token: str) -> DownloadGrant:
        try:
            claims = jwt.decode(token, self._secret, algorithms=["HS256"], audience=_AUDIENCE)
        except jwt.InvalidTokenError:
            # Expired, forged and unknown links all look the same to the client.
            raise NotFound("this link has expired or does not exist", reason="not-found") from None
        if claims.get("kind") not in KINDS or not isinstance(claims.get("img"), str):
            raise NotFound("this link has expired or does not exist", reason="not-found")
        return DownloadGrant(image_id=claims["img"], kind=claims["kind"])
