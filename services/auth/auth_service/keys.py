"""RSA signing keys kept as PEM files in JWT_KEY_DIR. The newest key signs; every
key in the directory is published in the JWKS so older tokens keep verifying."""

from __future__ import annotations

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


class KeyRing:
    def __init__(self, keys: list[SigningKey]) -> None:
        if not keys:
            raise ValueError("no signing keys")
        # kids start with a UTC timestamp, so sorting puts the newest last.
        self._keys = sorted(keys, key=lambda key: key.kid)

    @property
    def signing_key(self) -> SigningKey:
        return self._keys[-1]

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


def load_key_ring(directory: Path, create_if_empty: bool) -> KeyRing:
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
    return KeyRing(keys)
