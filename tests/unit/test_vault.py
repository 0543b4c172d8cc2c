"""Sealed secrets open only with their key and in their own row."""

from __future__ import annotations

import os

import pytest

from collector import errors, vault

TOKEN = "IGAAsealedtoken0123456789abcdef"


def test_a_sealed_token_opens_only_with_its_key_and_row() -> None:
    key = os.urandom(32)
    box = vault.Vault(key)
    sealed = box.seal(TOKEN, ig_user_id="1784", seed_sha256="aa")
    assert TOKEN.encode() not in sealed
    assert box.open(sealed, ig_user_id="1784", seed_sha256="aa") == TOKEN
    # a fresh nonce each time: the same token never seals to the same bytes
    assert box.seal(TOKEN, ig_user_id="1784", seed_sha256="aa") != sealed
    for row in (
        {"ig_user_id": "1785", "seed_sha256": "aa"},
        {"ig_user_id": "1784", "seed_sha256": "ab"},
    ):
        with pytest.raises(errors.SealBroken):
            box.open(sealed, **row)
    with pytest.raises(errors.SealBroken) as info:
        vault.Vault(os.urandom(32)).open(sealed, ig_user_id="1784", seed_sha256="aa")
    assert "same [cluster] secret_file" in str(info.value)
    tampered = sealed[:-1] + bytes([sealed[-1] ^ 1])
    with pytest.raises(errors.SealBroken):
        box.open(tampered, ig_user_id="1784", seed_sha256="aa")
    with pytest.raises(errors.SealBroken):
        box.open(b"short", ig_user_id="1784", seed_sha256="aa")
    assert key.hex() not in repr(box)
    with pytest.raises(errors.ConfigError):
        vault.Vault(b"too short")
