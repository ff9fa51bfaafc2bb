"""Pseudonymous user ids: what is kept of a user whose account was erased.

HMAC-SHA256 of the user id under PSEUDONYM_SECRET, shared by every service that keeps one
(auth's erasure records, history's erased-user markers, admin's audit log), so records about
the same erased user still agree with each other, while nobody without the secret can tell
whose they were or test a guessed user id against them."""

from __future__ import annotations

import hashlib
import hmac

PREFIX = "erased-"


def pseudonym(secret: str, user_id: str) -> str:
    digest = hmac.new(secret.encode(), user_id.encode(), hashlib.sha256).hexdigest()
    return f"{PREFIX}{digest[:32]}"
