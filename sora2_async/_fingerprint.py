"""A key's fingerprint: names its shared budget (a file, a Redis namespace), reveals nothing."""

from __future__ import annotations

import hashlib

__all__ = ["key_fingerprint"]


def key_fingerprint(api_key: str, base_url: str) -> str:
    """SHA-256 of the key and the base URL, shortened: the same key on another API (a
    simulator, say) gets a budget of its own, and the key cannot be read back from it."""
    digest = hashlib.sha256(f"{api_key.strip()}\n{base_url.rstrip('/')}".encode())
    return digest.hexdigest()[:24]
