"""Pseudonymous customer ids for logs, alerts and metrics: a keyed hash, never the raw id.

HMAC-SHA256 under a deployment secret, so the pseudonym is stable (one customer's log lines can
be followed across requests, replicas and days) but cannot be reversed or recomputed without
the key: a plain hash of a small integer id would fall to a dictionary of all ids in seconds.
Whoever holds the key (the data-protection officer, an incident responder) re-identifies a
customer by hashing the candidate ids, which is also how a customer's data-subject request is
traced through the logs.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import tempfile
from pathlib import Path
from typing import Final

#: Hex characters of the digest kept: 64 bits, collision-free at any bank's customer count.
PSEUDONYM_HEX: Final = 16
KEY_BYTES: Final = 32


class Pseudonymiser:
    """``pseudonymiser(customer_id)`` -> ``"c_<16 hex>"``."""

    def __init__(self, key: bytes):
        if len(key) < 16:
            raise ValueError("pseudonym key: at least 16 bytes")
        self._key = key

    def __call__(self, customer_id: int | str) -> str:
        digest = hmac.new(self._key, str(customer_id).encode(), hashlib.sha256).hexdigest()
        return f"c_{digest[:PSEUDONYM_HEX]}"

    def __repr__(self) -> str:  # never print the key
        return "Pseudonymiser(key=***)"


def key_file_for(data_dir: Path) -> Path:
    return Path(data_dir) / "secrets" / "pseudonym.key"


def load_or_create_key(path: Path) -> bytes:
    """The key stored at ``path`` (hex), created with mode 0600 on first use. The key is
    written to a private temporary file and hard-linked into place, so processes starting
    together agree on one key and none reads a half-written file."""
    path = Path(path)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=".pseudonym-")
        try:
            with os.fdopen(fd, "w") as out:  # mkstemp creates it with mode 0600
                out.write(secrets.token_hex(KEY_BYTES))
            os.link(temporary, path)
        except FileExistsError:
            pass  # another process linked its key first: read theirs
        finally:
            os.unlink(temporary)
    text = path.read_text().strip()
    try:
        key = bytes.fromhex(text)
    except ValueError as error:
        raise ValueError(f"pseudonym key {path}: not hex ({error})") from error
    if len(key) < 16:
        raise ValueError(f"pseudonym key {path}: {len(key)} bytes, need at least 16")
    return key


def pseudonymiser_for(data_dir: Path, key_hex: str | None = None) -> Pseudonymiser:
    """The deployment's pseudonymiser: ``PERSONA_PSEUDONYM_KEY`` (hex) when set, else the key
    file under ``<data_dir>/secrets/``."""
    if key_hex:
        try:
            return Pseudonymiser(bytes.fromhex(key_hex))
        except ValueError as error:
            raise ValueError(f"PERSONA_PSEUDONYM_KEY: {error}") from error
    return Pseudonymiser(load_or_create_key(key_file_for(data_dir)))


def configured_pseudonymiser(data_dir: Path) -> Pseudonymiser:
    """:func:`pseudonymiser_for` with the key from the environment's settings, if any."""
    from persona.settings import PersonaSettings

    key = PersonaSettings(data_dir=data_dir).pseudonym_key
    return pseudonymiser_for(data_dir, key.get_secret_value() if key else None)
