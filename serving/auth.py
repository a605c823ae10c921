"""API keys per app: stored as SHA-256, compared in constant time."""

from __future__ import annotations

import hashlib
import hmac
import secrets

from serving.config import AppsConfig


def hash_key(api_key: str) -> str:
    return hashlib.sha256(api_key.encode()).hexdigest()


def new_api_key() -> tuple[str, str]:
    """A fresh key and its hash (give the key to the app, put the hash in apps.yaml)."""
    key = secrets.token_urlsafe(32)
    return key, hash_key(key)


class KeyRing:
    def __init__(self, apps: AppsConfig):
        self._hashes = [
            (app, bytes.fromhex(h))
            for app, config in apps.apps.items()
            for h in config.api_key_sha256
        ]

    def app_for(self, api_key: str | None) -> str | None:
        """The app this key belongs to, or None. Every stored hash is compared (no early exit)."""
        if not api_key or len(api_key) > 512:
            return None
        digest = hashlib.sha256(api_key.encode()).digest()
        found = None
        for app, stored in self._hashes:
            if hmac.compare_digest(digest, stored):
                found = app
        return found
