"""API keys: held only as SHA-256 digests, compared in constant time; each key sees only its jobs."""

from __future__ import annotations

import hashlib
import hmac

from .problems import Problem


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


class Keys:
    def __init__(self, configured: list[str]):
        self.digests = [k.removeprefix("sha256:") if k.startswith("sha256:") else hash_key(k) for k in configured]

    @property
    def enabled(self) -> bool:
        return bool(self.digests)

    def owner(self, presented: str | None) -> str:
        """The caller's identity (the key's digest); raises 401/403."""
        if not presented:
            raise Problem(
                401,
                "missing_api_key",
                "this route needs an API key (Authorization: Bearer <key> or X-API-Key)",
                headers={"WWW-Authenticate": "Bearer"},
            )
        digest = hash_key(presented)
        matched = False
        for known in self.digests:
            matched |= hmac.compare_digest(digest, known)  # no early exit: constant time over the list
        if not matched:
            raise Problem(403, "invalid_api_key", "the API key is not valid")
        return digest
