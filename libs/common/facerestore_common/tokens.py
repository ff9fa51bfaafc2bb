"""Access-token verification against the auth service's published keys (JWKS)."""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from dataclasses import dataclass

import jwt

from facerestore_common.errors import PermissionDenied, Unauthenticated, Unavailable
from facerestore_common.revocation import SessionRevocations

ALGORITHMS = ["RS256"]
ROLES = ("user", "admin")


@dataclass(frozen=True)
class Principal:
    user_id: str
    role: str
    session_id: str
    token_id: str
    token: str

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


current_principal: ContextVar[Principal | None] = ContextVar("current_principal", default=None)


def require_principal() -> Principal:
    principal = current_principal.get()
    if principal is None:
        raise Unauthenticated("a bearer token is required")
    return principal


def require_admin() -> Principal:
    principal = require_principal()
    if not principal.is_admin:
        raise PermissionDenied("this needs the admin role", reason="forbidden")
    return principal


JwksFetcher = Callable[[], Awaitable[str]]


class JwksCache:
    """Caches the key set; refetches when it is stale or a token names an unknown kid."""

    def __init__(self, fetch: JwksFetcher, ttl_seconds: int, min_refetch_seconds: float = 5.0) -> None:
        self._fetch = fetch
        self._ttl = ttl_seconds
        self._min_refetch = min_refetch_seconds
        self._keys: dict[str, jwt.PyJWK] = {}
        self._fetched_at = 0.0
        self._lock = asyncio.Lock()

    async def _refresh(self) -> None:
        async with self._lock:
            if time.monotonic() - self._fetched_at < self._min_refetch and self._keys:
                return
            try:
                document = await self._fetch()
            except Exception as error:
                raise Unavailable("tokens cannot be checked right now", reason="auth-unavailable") from error
            try:
                keys = jwt.PyJWKSet.from_json(document).keys
            except jwt.PyJWKSetError:
                keys = []  # no usable key: every token is then refused as signed by an unknown key
            self._keys = {key.key_id: key for key in keys if key.key_id}
            self._fetched_at = time.monotonic()

    async def key(self, kid: str) -> jwt.PyJWK:
        if not self._keys or time.monotonic() - self._fetched_at > self._ttl:
            await self._refresh()
        if kid not in self._keys:
            await self._refresh()
        try:
            return self._keys[kid]
        except KeyError:
            raise Unauthenticated("the token was signed with an unknown key", reason="invalid-token") from None


class TokenVerifier:
    """Checks a token's signature and claims, then whether its session has ended.

    A client sends the same access token with every request for its lifetime, so a token whose
    signature and claims were checked is remembered (up to `cache_size` of them) until it expires
    or `cache_seconds` pass, whichever is first; whether its session has ended is asked every time.
    A key withdrawn from the key set thus stops a remembered token within `cache_seconds`, well
    within the key set's own cache time."""

    def __init__(
        self,
        keys: JwksCache,
        issuer: str,
        audience: str,
        leeway_seconds: int,
        revocations: SessionRevocations | None = None,
        cache_seconds: float = 60.0,
        cache_size: int = 10_000,
    ) -> None:
        self._keys = keys
        self._revocations = revocations
        self._issuer = issuer
        self._audience = audience
        self._leeway = leeway_seconds
        self._cache_seconds = cache_seconds
        self._cache_size = cache_size
        self._verified: OrderedDict[str, tuple[float, Principal]] = OrderedDict()

    async def verify(self, token: str) -> Principal:
        remembered = self._verified.get(token)
        if remembered is not None and remembered[0] > time.time():
            self._verified.move_to_end(token)
            principal = remembered[1]
        else:
            self._verified.pop(token, None)
            principal, expires_at = await self._check(token)
            if self._cache_size > 0:
                self._verified[token] = (min(expires_at, time.time() + self._cache_seconds), principal)
                if len(self._verified) > self._cache_size:
                    self._verified.popitem(last=False)
        if self._revocations is not None and await self._revocations.is_revoked(principal.session_id):
            raise Unauthenticated("this session has ended; sign in again", reason="session-revoked")
        return principal

    def remembered(self, token: str) -> Principal | None:
        """The principal of a token already verified and not yet expired, without any check of
        its session (the caller asks that itself)."""
        remembered = self._verified.get(token)
        if remembered is None or remembered[0] <= time.time():
            return None
        return remembered[1]

    async def _check(self, token: str) -> tuple[Principal, float]:
        """The token's principal and when it stops being valid, or Unauthenticated."""
        try:
            header = jwt.get_unverified_header(token)
        except jwt.InvalidTokenError:
            raise Unauthenticated("the token is malformed", reason="invalid-token") from None
        if header.get("alg") not in ALGORITHMS or not isinstance(header.get("kid"), str):
            raise Unauthenticated("the token's algorithm or key id is not accepted", reason="invalid-token")
        key = await self._keys.key(header["kid"])
        try:
            claims = jwt.decode(
                token,
                key.key,
                algorithms=ALGORITHMS,
                audience=self._audience,
                issuer=self._issuer,
                leeway=self._leeway,
                options={"require": ["exp", "iat", "sub", "sid", "jti", "role"]},
            )
        except jwt.ExpiredSignatureError:
            raise Unauthenticated("the token has expired", reason="token-expired") from None
        except jwt.InvalidTokenError:
            raise Unauthenticated("the token is not valid", reason="invalid-token") from None
        if claims["role"] not in ROLES:
            raise Unauthenticated("the token carries an unknown role", reason="invalid-token")
        principal = Principal(
            user_id=claims["sub"], role=claims["role"], session_id=claims["sid"], token_id=claims["jti"], token=token
        )
        return principal, float(claims["exp"]) + self._leeway


def bearer_token(authorization: str | None) -> str | None:
    if not authorization:
        return None
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()
