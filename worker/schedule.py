"""Delayed retries in a Redis sorted set, released onto the queue when due.

Celery's countdown retries are held in worker memory past the visibility timeout,
which the short lease timeout would turn into duplicate deliveries; a sorted set
scored by due time keeps waiting requests in Redis, where a restart cannot lose them.
Each request's envelopes in the schedule are also listed under `keys.scheduled_envelopes_key`,
so cancelling a request removes exactly its own (see `producers.cancel`).
"""

from __future__ import annotations

import json
import math
import threading
import time

import redis

from producers import keys
from producers.delayed import SCHEDULE_ENVELOPE
from producers.priority import queue_lists

_RELEASE_DUE = """
local function decoded(envelope)
  local ok, message = pcall(cjson.decode, envelope)
  if ok and type(message) == 'table' then return message end
  return {}
end
local function step_of(message)
  if type(message['properties']) ~= 'table' then return 0 end
  local step = tonumber(message['properties']['priority'])
  if step == nil then return 0 end
  return math.max(0, math.min(math.floor(step), #KEYS - 2))
end
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
for _, envelope in ipairs(due) do
  local message = decoded(envelope)
  redis.call('ZREM', KEYS[1], envelope)
  redis.call('LPUSH', KEYS[2 + step_of(message)], envelope)
  if type(message['headers']) == 'table' and type(message['headers']['id']) == 'string' then
    redis.call('SREM', ARGV[3] .. message['headers']['id'], envelope)
  end
end
return #due
"""
"""KEYS: the schedule, then the queue's list of each priority step (`producers.priority.queue_lists`).
ARGV: now, batch, the prefix of the per-request envelope sets (the queue's). Each envelope goes back onto
the list its `properties.priority` (kombu's step) names, read as kombu reads it (`priority.message_priority`),
so a retry or a delayed run keeps its priority; it leaves its request's envelope set."""

_ADD = (
    SCHEDULE_ENVELOPE
    + """
schedule_envelope(KEYS[1], KEYS[2], ARGV[1], ARGV[2], ARGV[3])
"""
)
"""KEYS: schedule, the request's envelope set ('' = unknown request). ARGV: envelope, due, set TTL."""

INDEX_GRACE_S = 86400
"""A request's envelope set outlives its latest due time by this much (it is emptied on release anyway)."""

_DEFER = (
    SCHEDULE_ENVELOPE
    + """
schedule_envelope(KEYS[1], KEYS[4], ARGV[1], ARGV[2], ARGV[4])
if redis.call('ZSCORE', KEYS[2], ARGV[3]) then
  redis.call('ZADD', KEYS[2], ARGV[2], ARGV[3])
  redis.call('HSET', KEYS[3], ARGV[3], ARGV[1])
end
"""
)
"""KEYS: the schedule, the waiting index, the waiting messages, the request's envelope set. ARGV: envelope, due,
request id, the set's TTL. Schedule the copy (listed for a cancel) and, if the request is still waiting to be
taken on, make it the message the lost-message sweeper looks for, from its due time on."""


class RetrySchedule:
    """Holds task envelopes until their due time, then moves them atomically onto the queue."""

    def __init__(self, client: redis.Redis, queue: str) -> None:
        self.client = client
        self.queue = queue
        self.key = keys.retry_schedule_key(queue)
        self._release_due = client.register_script(_RELEASE_DUE)
        self._add = client.register_script(_ADD)
        self._defer = client.register_script(_DEFER)

    def add(self, envelope: str, due: float, pipe: redis.client.Pipeline | None = None) -> None:
        """Schedule an envelope for `due` (epoch seconds), listed under its request's envelope set."""
        request_id = envelope_request_id(envelope)
        index = keys.scheduled_envelopes_key(self.queue, request_id) if request_id is not None else ""
        self._add(keys=[self.key, index], args=[envelope, due, _listed_for(due)], client=pipe)

    def defer(self, envelope: str, due: float, request_id: str) -> None:
        """Schedule a deferred copy of a request that may still be `queued`, in one call.

        A deferred request stays `queued`, in the producer's waiting index, while its first message is
        gone: without this the sweeper (`worker.sweeper`) would take a wait longer than `lost_after` for a
        lost message and send it again, adding one more copy every time.
        """
        waiting = [keys.waiting_key(self.queue), keys.waiting_messages_key(self.queue)]
        index = keys.scheduled_envelopes_key(self.queue, request_id)
        self._defer(keys=[self.key, *waiting, index], args=[envelope, due, request_id, _listed_for(due)])

    def release_due(self, now: float | None = None, batch: int = 100) -> int:
        """Move every due envelope onto the queue; return how many moved."""
        now = time.time() if now is None else now
        prefix = keys.scheduled_envelopes_key(self.queue, "")
        return int(self._release_due(keys=[self.key, *queue_lists(self.queue)], args=[now, batch, prefix]))

    def pending(self) -> int:
        """Envelopes still waiting."""
        return int(self.client.zcard(self.key))


def _listed_for(due: float) -> int:
    """Seconds a request's envelope set is kept for an envelope due at `due`: past that, with a grace."""
    return math.ceil(max(0.0, due - time.time())) + INDEX_GRACE_S


def envelope_request_id(envelope: str | bytes) -> str | None:
    """The request id a task envelope carries (its `id` header), or None for one that holds none."""
    try:
        headers = json.loads(envelope).get("headers")
    except (ValueError, AttributeError):
        return None
    request_id = headers.get("id") if isinstance(headers, dict) else None
    return request_id if isinstance(request_id, str) else None


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
