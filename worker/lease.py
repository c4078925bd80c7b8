"""Leases: a live worker holds one on the request it runs, kept fresh by a heartbeat thread.

The heartbeat also refreshes the message's score in kombu's `unacked_index`, so with a
short `visibility_timeout` kombu's own restore sweep gives back only the messages
whose worker died: a long run is never taken twice, a dead one is recovered fast.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import redis
import structlog

from producers import keys
from worker.scripts import RELEASE_IF_OWNER

log = structlog.get_logger("zenml_trigger")

_REFRESH = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('EXPIRE', KEYS[1], ARGV[2])
if ARGV[3] ~= '' then redis.call('ZADD', KEYS[2], 'XX', ARGV[4], ARGV[3]) end
return 1
"""


class Leases:
    """Acquire, refresh and release per-request leases."""

    def __init__(self, client: redis.Redis, timeout: int, interval: float, holder: str | None = None) -> None:
        self.client = client
        self.timeout = timeout
        self.interval = interval
        self.holder = holder or uuid.uuid4().hex
        self._release = client.register_script(RELEASE_IF_OWNER)
        self._refresh = client.register_script(_REFRESH)

    def acquire(self, request_id: str) -> bool:
        """Take the lease unless another live worker holds it."""
        key = keys.lease_key(request_id)
        if self.client.set(key, self.holder, nx=True, ex=self.timeout):
            return True
        return self.client.get(key) == self.holder.encode()

    def refresh(self, request_id: str, delivery_tag: str | None) -> bool:
        """Extend the lease and mark the message as alive for kombu's restore sweep."""
        keys_ = [keys.lease_key(request_id), keys.UNACKED_INDEX_KEY]
        args = [self.holder, self.timeout, delivery_tag or "", time.time()]
        return bool(self._refresh(keys=keys_, args=args))

    def remaining(self, request_id: str) -> float:
        """Seconds until the lease on `request_id` expires (0 when none is held)."""
        ttl_ms = self.client.pttl(keys.lease_key(request_id))
        return max(0.0, ttl_ms / 1000) if ttl_ms and ttl_ms > 0 else 0.0

    def release(self, request_id: str) -> None:
        """Drop the lease if still ours; best effort, since it expires by itself anyway."""
        try:
            self._release(keys=[keys.lease_key(request_id)], args=[self.holder])
        except redis.RedisError as exc:
            log.warning("trigger.lease_release_failed", request_id=request_id, error=str(exc))

    @contextmanager
    def held(self, request_id: str, delivery_tag: str | None) -> Iterator[None]:
        """Heartbeat in a thread while the body runs; release afterwards."""
        stop = threading.Event()
        thread = threading.Thread(target=self._beat, args=(request_id, delivery_tag, stop), daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join(timeout=self.interval + 1)
            self.release(request_id)

    def _beat(self, request_id: str, delivery_tag: str | None, stop: threading.Event) -> None:
        while not stop.wait(self.interval):
            try:
                if not self.refresh(request_id, delivery_tag):
                    log.warning("trigger.lease_lost", request_id=request_id, reason="expired or taken over")
            except redis.RedisError as exc:
                log.warning("trigger.heartbeat_failed", request_id=request_id, error=str(exc))
