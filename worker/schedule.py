"""Delayed retries in a Redis sorted set, released onto the queue when due.

Celery's countdown retries are held in worker memory past the visibility timeout,
which the short lease timeout would turn into duplicate deliveries; a sorted set
scored by due time keeps waiting requests in Redis, where a restart cannot lose them.
"""

from __future__ import annotations

import threading
import time

import redis

from producers import keys

_RELEASE_DUE = """
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
for _, envelope in ipairs(due) do
  redis.call('ZREM', KEYS[1], envelope)
  redis.call('LPUSH', KEYS[2], envelope)
end
return #due
"""

_DEFER = """
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
if redis.call('ZSCORE', KEYS[2], ARGV[3]) then
  redis.call('ZADD', KEYS[2], ARGV[2], ARGV[3])
  redis.call('HSET', KEYS[3], ARGV[3], ARGV[1])
end
"""
"""KEYS: the schedule, the waiting index, the waiting messages. ARGV: envelope, due, request id. Schedule the
copy and, if the request is still waiting to be taken on, make it the message the lost-message sweeper looks
for, from its due time on."""


class RetrySchedule:
    """Holds task envelopes until their due time, then moves them atomically onto the queue."""

    def __init__(self, client: redis.Redis, queue: str) -> None:
        self.client = client
        self.queue = queue
        self.key = keys.retry_schedule_key(queue)
        self._release_due = client.register_script(_RELEASE_DUE)
        self._defer = client.register_script(_DEFER)

    def add(self, envelope: str, due: float, pipe: redis.client.Pipeline | None = None) -> None:
        """Schedule an envelope for `due` (epoch seconds)."""
        (pipe if pipe is not None else self.client).zadd(self.key, {envelope: due})

    def defer(self, envelope: str, due: float, request_id: str) -> None:
        """Schedule a deferred copy of a request that may still be `queued`, in one call.

        A deferred request stays `queued`, in the producer's waiting index, while its first message is
        gone: without this the sweeper (`worker.sweeper`) would take a wait longer than `lost_after` for a
        lost message and send it again, adding one more copy every time.
        """
        waiting = [keys.waiting_key(self.queue), keys.waiting_messages_key(self.queue)]
        self._defer(keys=[self.key, *waiting], args=[envelope, due, request_id])

    def release_due(self, now: float | None = None, batch: int = 100) -> int:
        """Move every due envelope onto the queue; return how many moved."""
        now = time.time() if now is None else now
        return int(self._release_due(keys=[self.key, self.queue], args=[now, batch]))

    def pending(self) -> int:
        """Envelopes still waiting."""
        return int(self.client.zcard(self.key))


class ScheduleReleaser(threading.Thread):
    """Background thread in the worker's main process that releases due retries every second."""

    def __init__(self, schedule: RetrySchedule, interval: float = 1.0) -> None:
        super().__init__(name="retry-releaser", daemon=True)
        self.schedule = schedule
        self.interval = interval
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(self.interval):
            try:
                while self.schedule.release_due() > 0:
                    pass
            except redis.RedisError:
                continue
