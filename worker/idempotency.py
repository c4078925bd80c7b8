"""Idempotency claims: the first request with a key owns it for the dedup window, atomically."""

from __future__ import annotations

import redis

from producers import keys
from worker.outcomes import Refused
from worker.scripts import RELEASE_IF_OWNER_FENCED


class IdempotencyClaims:
    """`SET NX` claims in Redis, so two worker processes can never both win one key."""

    def __init__(self, client: redis.Redis, window: int) -> None:
        self.client = client
        self.window = window
        self._release = client.register_script(RELEASE_IF_OWNER_FENCED)

    def claim(self, key: str, request_id: str) -> str:
        """Claim `key` for `request_id`; return the owner (ours on success or redelivery)."""
        name = keys.idempotency_key(key)
        for _ in range(3):
            if self.client.set(name, request_id, nx=True, ex=self.window):
                return request_id
            owner = self.client.get(name)
            if owner is not None:
                return owner.decode()
        return request_id

    def release(self, key: str, request_id: str, fence: str | None = None) -> None:
        """Give the key up (after a non-successful end) so a later request may try again; with a lease's
        `fence`, only while the lease holds it (`Refused` 'fenced' once another worker took the request over)."""
        keys_ = [keys.idempotency_key(key), keys.lease_key(request_id)]
        if self._release(keys=keys_, args=[request_id, fence or ""]) == -1:
            raise Refused("fenced", request_id)
