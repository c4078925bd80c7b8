"""Sending again a message that was lost in flight, so no request stays `queued` forever.

kombu's Redis transport pops a message (BRPOP) and only then records it as unacked; a main
process killed in between, or a connection dropped after Redis replied, loses the message
while its request stays `queued`. The producer notes every new request as *waiting*, with its
message, until a worker takes it on. The sweeper, in each worker's main process, looks at
requests that have waited longer than `lost_after` and whose message is neither still in the
queue (`LPOS`) nor held unacked by a worker, and pushes their message again under a fresh
delivery tag. A copy that turns out not to have been lost is
harmless: the request's state and lease make the second copy start nothing.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import redis

from producers import keys
from producers.priority import message_priority, queue_list
from producers.state import NOT_STARTED, StateStore
from worker.logs import get_logger


class Sweeper:
    """Finds waiting requests whose message is nowhere and sends it again."""

    def __init__(self, client: redis.Redis, queue: str, states: StateStore, lost_after: float) -> None:
        self.client, self.queue, self.states, self.lost_after = client, queue, states, lost_after
        self.waiting, self.messages = keys.waiting_key(queue), keys.waiting_messages_key(queue)

    def sweep(self, now: float | None = None, batch: int = 100) -> int:
        """Send again the messages of requests lost in flight; return how many."""
        now = time.time() if now is None else now
        due = self.client.zrangebyscore(self.waiting, "-inf", now - self.lost_after, start=0, num=batch)
        return sum(self._check(member.decode(), now) for member in due)

    def _check(self, request_id: str, now: float) -> bool:
        state = self.states.get(request_id)
        envelope = self.client.hget(self.messages, request_id)
        if state is None or state.status not in NOT_STARTED or envelope is None:  # expired, or taken on
            self._forget(request_id)
            return False
        if self._in_line(envelope) or self._unacked(envelope):
            return False  # still waiting its turn (on its list, or in the schedule), or a worker holds it
        self._resend(request_id, envelope, now)
        return True

    def _in_line(self, envelope: bytes) -> bool:
        """Whether the message is still on its priority's list, or still held in the retry schedule."""
        listed = self.client.lpos(_list_of(self.queue, envelope), envelope) is not None
        return listed or self.client.zscore(keys.retry_schedule_key(self.queue), envelope) is not None

    def _unacked(self, envelope: bytes) -> bool:
        tag = _delivery_tag(envelope)
        return bool(tag) and bool(self.client.hexists(keys.UNACKED_KEY, tag))

    def _resend(self, request_id: str, envelope: bytes, now: float) -> None:
        fresh = _retagged(envelope)
        pipe = self.client.pipeline(transaction=True)
        pipe.lpush(_list_of(self.queue, envelope), fresh).hset(self.messages, request_id, fresh)
        pipe.zadd(self.waiting, {request_id: now}).execute()
        get_logger().warning("trigger.resent", request_id=request_id, reason="its message was lost in flight")

    def _forget(self, request_id: str) -> None:
        self.client.pipeline(transaction=True).zrem(self.waiting, request_id).hdel(self.messages, request_id).execute()


class SweeperThread(threading.Thread):
    """Runs the periodic chores (the sweep, dead-letter pruning) every `interval` seconds in the main process."""

    def __init__(self, chores: Sequence[Callable[[], object]], interval: float) -> None:
        super().__init__(name="lost-message-sweeper", daemon=True)
        self.chores, self.interval = tuple(chores), interval
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(self.interval):
            for chore in self.chores:
                try:
                    chore()
                except redis.RedisError:
                    continue


def _parsed(envelope: bytes) -> dict[str, Any]:
    try:
        message = json.loads(envelope)
    except ValueError:
        return {}
    return message if isinstance(message, dict) else {}


def _list_of(queue: str, envelope: bytes) -> str:
    """The list of `queue` the message belongs on, by the priority it carries."""
    return queue_list(queue, message_priority(_parsed(envelope)))


def _delivery_tag(envelope: bytes) -> str | None:
    properties = _parsed(envelope).get("properties")
    tag = properties.get("delivery_tag") if isinstance(properties, dict) else None
    return tag if isinstance(tag, str) else None


def _retagged(envelope: bytes) -> str:
    """The same message under a fresh delivery tag, so it never collides with a copy kombu still tracks."""
    message = _parsed(envelope)
    message.setdefault("properties", {})["delivery_tag"] = os.urandom(16).hex()
    return json.dumps(message, separators=(",", ":"))
