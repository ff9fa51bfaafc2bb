"""Short-lived download tokens: the capability that an image URL carries."""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass

import jwt

from facerestore_common.errors import NotFound

KINDS = ("original", "thumbnail", "restored")
_AUDIENCE = "facerestore-download"
# A link without an expiry (or any of these) is refused, whoever signed it.
_REQUIRED = ["exp", "iat", "aud", "img", "kind"]


@dataclass(frozen=True)
class DownloadGrant:
    image_id: str
    kind: str
    # Issued to an admin: it opens an image that is hidden pending review, too.
    review: bool = False
    # A version's result ("r2"); empty: the image's own (its preferred version's).
    restoration: str = ""


class DownloadTokens:
    def __init__(self, secret: str, ttl_seconds: int) -> None:
        self._secret = secret
        self._ttl = ttl_seconds
        # A link is handed out again for a third of its lifetime (a page of images asks for three
        # per image, every time), so it always has at least two thirds of its TTL left.
        self._reuse_seconds = max(1, ttl_seconds // 3)
        self._signed = functools.lru_cache(maxsize=65_536)(self._sign)

    def issue(self, image_id: str, kind: str, *, review: bool = False, restoration: str = "") -> str:
        now = int(time.time())
        return self._signed(image_id, kind, review, now - now % self._reuse_seconds, restoration)

    def _sign(self, image_id: str, kind: str, review: bool, issued_at: int, restoration: str = "") -> str:
        claims: dict[str, object] = {"img": image_id, "kind": kind, "aud": _AUDIENCE}
        claims.update(iat=issued_at, exp=issued_at + self._ttl)
        if review:
            claims["review"] = True
        if restoration:
            claims["rid"] = restoration
        return jwt.encode(claims, self._secret, algorithm="HS256")

    def read(self, token: str) -> DownloadGrant:
        try:
            claims = jwt.decode(
                token, self._secret, algorithms=["HS256"], audience=_AUDIENCE, options={"require": _REQUIRED}
            )
        except jwt.InvalidTokenError:
            # Expired, forged and unknown links all look the same to the client.
            raise NotFound("this link has expired or does not exist", reason="not-found") from None
        if claims.get("kind") not in KINDS or not isinstance(claims.get("img"), str):
            raise NotFound("this link has expired or does not exist", reason="not-found")
        restoration = claims.get("rid", "")
        return DownloadGrant(
            image_id=claims["img"],
            kind=claims["kind"],
            review=claims.get("review") is True,
            restoration=restoration if isinstance(restoration, str) else "",
        )
