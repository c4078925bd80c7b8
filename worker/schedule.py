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
from producers.priority import queue_lists

_RELEASE_DUE = """
local function step_of(envelope)
  local ok, message = pcall(cjson.decode, envelope)
  if not ok or type(message) ~= 'table' or type(message['properties']) ~= 'table' then return 0 end
  local step = tonumber(message['properties']['priority'])
  if step == nil then return 0 end
  return math.max(0, math.min(math.floor(step), #KEYS - 2))
end
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
for _, envelope in ipairs(due) do
  redis.call('ZREM', KEYS[1], envelope)
  redis.call('LPUSH', KEYS[2 + step_of(envelope)], envelope)
end
return #due
"""
"""KEYS: the schedule, then the queue's list of each priority step (`producers.priority.queue_lists`).
ARGV: now, batch. Each envelope goes back onto the list its `properties.priority` (kombu's step) names,
read as kombu reads it (`priority.message_priority`), so a retry or a delayed run keeps its priority."""


class RetrySchedule:
    """Holds task envelopes until their due time, then moves them atomically onto the queue."""

    def __init__(self, client: redis.Redis, queue: str) -> None:
        self.client = client
        self.queue = queue
        self.key = keys.retry_schedule_key(queue)
        self._release_due = client.register_script(_RELEASE_DUE)

    def add(self, envelope: str, due: float, pipe: redis.client.Pipeline | None = None) -> None:
        """Schedule an envelope for `due` (epoch seconds)."""
        (pipe if pipe is not None else self.client).zadd(self.key, {envelope: due})

    def release_due(self, now: float | None = None, batch: int = 100) -> int:
        """Move every due envelope onto the queue; return how many moved."""
        now = time.time() if now is None else now
        return int(self._release_due(keys=[self.key, *queue_lists(self.queue)], args=[now, batch]))

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
