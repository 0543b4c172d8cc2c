"""Sealing secrets for the database: AES-256-GCM under a key the database never sees.

Cluster mode hands renewed Instagram Login tokens from one member to the next through
PostgreSQL (``sealed_token``). Each is sealed under the ``[cluster] secret_file`` key, which
every member reads from its configuration; a fresh 96-bit random nonce per seal (a few seals a
day per account, far below GCM's 2^32 bound per key), and the row's identity (account id and
seed fingerprint) as associated data, so a sealed value copied into another row does not open.
Nothing here logs, and no exception carries a secret.
"""

from __future__ import annotations

import os

from cryptography import exceptions as crypto_exceptions
from cryptography.hazmat.primitives.ciphers import aead

from collector import errors

NONCE_BYTES = 12
KEY_BYTES = 32
#: the format of the sealed bytes (the associated data starts with it)
VERSION = b"collector-sealed-v1"


class Vault:
    """Seals and opens short secrets bound to the row they belong to."""

    def __init__(self, key: bytes) -> None:
        if len(key) != KEY_BYTES:
            raise errors.ConfigError("the sealing key must be 32 bytes (64 hex digits)")
        self._aead = aead.AESGCM(key)

    def __repr__(self) -> str:
        return "Vault(<key hidden>)"

    @staticmethod
    def _aad(ig_user_id: str, seed_sha256: str) -> bytes:
        return b"%s:%s:%s" % (VERSION, ig_user_id.encode(), seed_sha256.encode())

    def seal(self, secret: str, *, ig_user_id: str, seed_sha256: str) -> bytes:
        """``nonce || ciphertext || tag``."""
        nonce = os.urandom(NONCE_BYTES)
        return nonce + self._aead.encrypt(
            nonce, secret.encode(), self._aad(ig_user_id, seed_sha256)
        )

    def open(self, sealed: bytes, *, ig_user_id: str, seed_sha256: str) -> str:
        """The secret; ``SealBroken`` when the bytes were not sealed for this row with this key."""
        if len(sealed) <= NONCE_BYTES + 16:
            raise errors.SealBroken("too short to be a sealed value")
        try:
            plain = self._aead.decrypt(
                sealed[:NONCE_BYTES], sealed[NONCE_BYTES:], self._aad(ig_user_id, seed_sha256)
            )
        except crypto_exceptions.InvalidTag:
            raise errors.SealBroken(
                "it does not open with this key: every member needs the same [cluster] secret_file"
            ) from None
        try:
            return plain.decode()
        except UnicodeDecodeError:
            raise errors.SealBroken("it does not hold text") from None
