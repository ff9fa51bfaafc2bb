"""Signed access tokens (RS256 JWT)."""

from __future__ import annotations

import time
import uuid

import jwt

from auth_service.keys import KeyRing


class AccessTokenIssuer:
    def __init__(self, keys: KeyRing, issuer: str, audience: str, ttl_seconds: int) -> None:
        self._keys = keys
        self._issuer = issuer
        self._audience = audience
        self.ttl_seconds = ttl_seconds

    def issue(self, user_id: str, role: str, session_id: str) -> str:
        now = int(time.time())
        key = self._keys.signing_key
        claims = {
            "iss": self._issuer,
            "aud": self._audience,
            "sub": user_id,
            "role": role,
            "sid": session_id,
            "iat": now,
            "exp": now + self.ttl_seconds,
            "jti": uuid.uuid4().hex,
        }
        return jwt.encode(claims, key.private_key, algorithm="RS256", headers={"kid": key.kid})
