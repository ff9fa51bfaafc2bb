"""RSA signing keys kept as PEM files in JWT_KEY_DIR. Every key in the directory is
published in the JWKS, so older tokens keep verifying. The newest key signs once it has
been published for `activation_seconds`: by then every verifier that cached the key set
earlier may refetch it, so no token is ever refused for carrying a kid not yet seen."""

from __future__ import annotations

import itertools
import json
import os
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm


@dataclass(frozen=True)
class SigningKey:
    kid: str
    private_key: rsa.RSAPrivateKey

    def public_jwk(self) -> dict[str, str]:
        jwk = json.loads(RSAAlgorithm.to_jwk(self.private_key.public_key()))
        return {**jwk, "kid": self.kid, "use": "sig", "alg": "RS256"}


def created_at(kid: str) -> float:
    """The creation time a kid starts with; 0 for kids not made by generate_key."""
    stamp = kid.partition("-")[0]
    for layout in ("%Y%m%dT%H%M%S%f", "%Y%m%dT%H%M%S"):
        try:
            return datetime.strptime(stamp, layout).replace(tzinfo=UTC).timestamp()
        except ValueError:
            continue
    return 0.0


class KeyRing:
    def __init__(self, keys: list[SigningKey], activation_seconds: float = 0.0) -> None:
        if not keys:
            raise ValueError("no signing keys")
        # kids start with a UTC timestamp, so sorting puts the newest last.
        self._keys = sorted(keys, key=lambda key: key.kid)
        self._activation_seconds = activation_seconds

    @property
    def signing_key(self) -> SigningKey:
        now = datetime.now(UTC).timestamp()
        active = [key for key in self._keys if now - created_at(key.kid) >= self._activation_seconds]
        # With none old enough (a first key), the oldest signs: no token can exist yet.
        return active[-1] if active else self._keys[0]

    @property
    def kids(self) -> list[str]:
        return [key.kid for key in self._keys]

    def replace(self, other: KeyRing) -> None:
        """Take over another ring's keys (a re-read of the key directory after a rotation)."""
        self._keys = list(other._keys)

    def jwks_json(self) -> str:
        return json.dumps({"keys": [key.public_jwk() for key in self._keys]})


def generate_key(directory: Path) -> SigningKey:
    directory.mkdir(parents=True, exist_ok=True)
    # Microseconds, so that keys made within one second still sort in the order they were made.
    kid = f"{datetime.now(UTC):%Y%m%dT%H%M%S%f}-{secrets.token_hex(4)}"
    private_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = private_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    path = directory / f"{kid}.pem"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(pem)
    return SigningKey(kid=kid, private_key=private_key)


def key_files(directory: Path) -> frozenset[tuple[str, int, int, int]]:
    """What reading the key directory would find, cheaply: each key file's name, inode, size and
    modification time (through symlinks, as a mounted Secret swaps them). Parsing an RSA key
    costs tens of milliseconds; a re-read is only worth it when this changes."""
    files = set()
    for path in directory.glob("*.pem") if directory.exists() else []:
        stat = path.stat()
        files.add((path.name, stat.st_ino, stat.st_size, stat.st_mtime_ns))
    return frozenset(files)


def load_key_ring(directory: Path, create_if_empty: bool, activation_seconds: float = 0.0) -> KeyRing:
    keys = []
    for path in sorted(directory.glob("*.pem")) if directory.exists() else []:
        private_key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        if not isinstance(private_key, rsa.RSAPrivateKey):
            raise ValueError(f"{path} is not an RSA private key")
        keys.append(SigningKey(kid=path.stem, private_key=private_key))
    if not keys:
        if not create_if_empty:
            raise FileNotFoundError(f"no signing key (*.pem) in JWT_KEY_DIR={directory}")
        keys.append(generate_key(directory))
    return KeyRing(keys, activation_seconds)


def prune_keys(directory: Path, keep_seconds: int) -> list[str]:
    """Delete keys that can no longer have live tokens: every key but the newest whose
    successor has been signing for longer than `keep_seconds` (the access-token lifetime
    plus leeway). Returns the deleted kids."""
    paths = sorted(directory.glob("*.pem"), key=lambda path: path.stem)
    deleted = []
    now = datetime.now(UTC).timestamp()
    for older, successor in itertools.pairwise(paths):
        if now - successor.stat().st_mtime > keep_seconds:
            older.unlink()
            deleted.append(older.stem)
    return deleted
