"""Leases: a live worker holds one on the request it runs, kept fresh by a heartbeat thread.

Each acquisition issues a fencing token, one more than the last issued for the request, and the
lease holds `holder:token`: every state write after the start is conditional on the lease still
holding the writer's `fence` (`worker.outcomes`), which also notes the token as the request's owner.
Both numbers live in `keys.lease_token_key`, which outlives the lease (as long as the state). The
heartbeat takes an expired lease back only while no newer token owns the request: a worker that
stalled past its lease while another took the request over can so record nothing, whatever its
run still does; one whose lease merely ran out (Redis away; a copy that looked and deferred) goes on.

The heartbeat also refreshes the message's score in kombu's `unacked_index`, so with a
short `visibility_timeout` kombu's own restore sweep gives back only the messages
whose worker died: a long run is never taken twice, a dead one is recovered fast.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import redis
import structlog

from producers import keys

log = structlog.get_logger("zenml_trigger")

_REFRESH = """
local current = redis.call('GET', KEYS[1])
if current and current ~= ARGV[1] then return 0 end
if not current and (tonumber(redis.call('HGET', KEYS[8], 'owner')) or 0) > tonumber(ARGV[10]) then return 3 end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
redis.call('EXPIRE', KEYS[8], ARGV[5])
redis.call('SET', KEYS[3], ARGV[4], 'EX', ARGV[5])
if ARGV[3] ~= '' then redis.call('ZADD', KEYS[2], 'XX', ARGV[4], ARGV[3]) end
redis.call('EXPIRE', KEYS[4], ARGV[5])
if ARGV[6] ~= '' and redis.call('GET', KEYS[5]) == ARGV[6] then redis.call('EXPIRE', KEYS[5], ARGV[7]) end
if ARGV[8] ~= '' and redis.call('GET', KEYS[6]) == ARGV[8] then redis.call('EXPIRE', KEYS[6], ARGV[2]) end
redis.call('ZADD', KEYS[7], ARGV[4] + ARGV[2], ARGV[9])
if current then return 1 end
return 2
"""
"""Extend our lease (ARGV[1], our fence), or take it back when nobody holds it and no newer token took the
request over (it expired while Redis was away, and a copy that took it meanwhile only deferred); mark the
holder seen; keep the message alive for kombu's restore sweep; keep the request's state and its
idempotency claim from expiring under a long run, and its coalescing key's in-flight lock alive as
long as the lease; keep its entry in the index of leases held, and its token counter as long as its state.
1: extended, 2: taken back, 0: another holder has it now, 3: a newer token recorded a state (for good)."""

_ACQUIRE = """
local current = redis.call('GET', KEYS[1])
if current and string.sub(current, 1, #ARGV[1] + 1) ~= ARGV[1] .. ':' then return 0 end
local token = redis.call('HINCRBY', KEYS[3], 'issued', 1)
redis.call('EXPIRE', KEYS[3], ARGV[5])
redis.call('SET', KEYS[1], ARGV[1] .. ':' .. token, 'EX', ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', ARGV[3])
redis.call('ZADD', KEYS[2], ARGV[3] + ARGV[2], ARGV[4])
return token
"""
"""Take the lease unless another holder has it, under a new fencing token (so even this holder's earlier
acquisition is fenced out), and enter it in the index of leases held (`keys.LEASES_KEY`, pruned of expired
entries here). KEYS: lease, index, tokens. ARGV: holder, timeout, now, request id, state TTL.
The token (> 0) when ours, else 0."""

_RELEASE = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('ZREM', KEYS[2], ARGV[2])
return redis.call('DEL', KEYS[1])
"""
"""Drop the lease and its index entry while we hold it. KEYS: lease, index. ARGV: fence, request id."""


class Leases:
    """Acquire, refresh and release per-request leases (one holder id per worker process, one fencing token
    per acquisition)."""

    def __init__(
        self,
        client: redis.Redis,
        timeout: int,
        interval: float,
        holder: str | None = None,
        state_ttl: int = 7 * 24 * 3600,
        claim_ttl: int = 24 * 3600,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.client = client
        self.timeout = timeout
        self.interval = interval
        self.holder = holder or uuid.uuid4().hex
        self.state_ttl = state_ttl
        self.claim_ttl = claim_ttl
        self.clock = clock
        self._acquire = client.register_script(_ACQUIRE)
        self._release = client.register_script(_RELEASE)
        self._refresh = client.register_script(_REFRESH)
        self._tokens: dict[str, int] = {}

    def acquire(self, request_id: str) -> bool:
        """Take the lease, under a new fencing token, unless another live worker holds it."""
        keys_ = [keys.lease_key(request_id), keys.LEASES_KEY, keys.lease_token_key(request_id)]
        args = [self.holder, self.timeout, self.clock(), request_id, self.state_ttl]
        token = int(self._acquire(keys=keys_, args=args))
        if token:
            self._tokens[request_id] = token
        return token > 0

    def fence(self, request_id: str) -> str | None:
        """What the lease holds while our latest acquisition of it is current (`holder:token`); None if we
        never took it. Writes fenced by it are refused once another worker took the request over."""
        token = self._tokens.get(request_id)
        return None if token is None else f"{self.holder}:{token}"

    def refresh(
        self, request_id: str, delivery_tag: str | None, claim: str | None = None, coalesce: str | None = None
    ) -> int:
        """Extend (1) or take back (2) the lease and mark this holder seen; 0 when another holder has it,
        3 when a newer token took the request over (for good: this acquisition can record nothing more)."""
        token = self._tokens.get(request_id)
        if token is None:
            return 0
        keys_ = [
            keys.lease_key(request_id),
            keys.UNACKED_INDEX_KEY,
            keys.lease_seen_key(request_id),
            keys.state_key(request_id),
            keys.idempotency_key(claim or ""),
            keys.coalesce_running_key(coalesce or ""),
            keys.LEASES_KEY,
            keys.lease_token_key(request_id),
        ]
        args = [f"{self.holder}:{token}", self.timeout, delivery_tag or "", self.clock(), self.state_ttl]
        args += [request_id if claim else "", self.claim_ttl, request_id if coalesce else "", request_id, token]
        return int(self._refresh(keys=keys_, args=args))

    def mark_seen(self, request_id: str) -> None:
        """Record that this holder is alive and running `request_id` now."""
        self.client.set(keys.lease_seen_key(request_id), self.clock(), ex=self.state_ttl)

    def holder_alive(self, request_id: str) -> bool:
        """Whether the request's last holder was heard from within two lease timeouts.

        A worker that died stops being heard from; one cut off by a Redis outage shorter than
        that takes its lease back when Redis returns, so its run is not started a second time.
        """
        seen = self.client.get(keys.lease_seen_key(request_id))
        return seen is not None and self.clock() - float(seen) < 2 * self.timeout

    def remaining(self, request_id: str) -> float:
        """Seconds until the lease on `request_id` expires (0 when none is held)."""
        ttl_ms = self.client.pttl(keys.lease_key(request_id))
        return max(0.0, ttl_ms / 1000) if ttl_ms and ttl_ms > 0 else 0.0

    def release(self, request_id: str) -> None:
        """Drop the lease if still ours; best effort, since it expires by itself anyway."""
        fence, token = self.fence(request_id), self._tokens.pop(request_id, None)
        if token is None:
            return
        try:
            args = [fence, request_id]
            self._release(keys=[keys.lease_key(request_id), keys.LEASES_KEY], args=args)
        except redis.RedisError as exc:
            log.warning("trigger.lease_release_failed", request_id=request_id, error=str(exc))

    @contextmanager
    def held(
        self, request_id: str, delivery_tag: str | None, claim: str | None = None, coalesce: str | None = None
    ) -> Iterator[None]:
        """Heartbeat in a thread while the body runs; release afterwards."""
        stop = threading.Event()
        beat_args = (request_id, delivery_tag, claim, coalesce, stop)
        thread = threading.Thread(target=self._beat, args=beat_args, daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join(timeout=self.interval + 1)
            self.release(request_id)

    def _beat(
        self, request_id: str, delivery_tag: str | None, claim: str | None, coalesce: str | None, stop: threading.Event
    ) -> None:
        while not stop.wait(self.interval):
            try:
                outcome = self.refresh(request_id, delivery_tag, claim, coalesce)
            except redis.RedisError as exc:
                log.warning("trigger.heartbeat_failed", request_id=request_id, error=str(exc))
                continue
            if outcome == 0:
                log.warning("trigger.lease_lost", request_id=request_id, reason="another worker holds it")
            elif outcome == 3:
                reason = "another worker took the request over: nothing this run records will land"
                log.warning("trigger.fenced", request_id=request_id, reason=reason)
                return
            elif outcome == 2:
                log.warning("trigger.lease_retaken", request_id=request_id, reason="it expired while Redis was away")
