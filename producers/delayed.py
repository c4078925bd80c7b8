"""Delayed runs: a request with a future `not_before` waits in the queue's retry schedule, recorded `scheduled`.

The producer puts its task message into the retry schedule (`keys.retry_schedule_key`), scored by
`not_before`, in the same Lua call that records its state; the worker's releaser moves it onto the
queue when due, like any retry. The schedule is a Redis sorted set, so the wait survives worker
restarts, and Redis restarts with persistence on.
"""

from __future__ import annotations

import re
import time
from datetime import datetime, timedelta, timezone

from producers.contract import TriggerRequest
from producers.errors import InvalidRequest, Problem
from producers.state import RequestState, Status

SCHEDULE_ENVELOPE = """
local function schedule_envelope(schedule_key, listed_key, envelope, due, ttl)
  redis.call('ZADD', schedule_key, due, envelope)
  if listed_key ~= '' then
    redis.call('SADD', listed_key, envelope)
    redis.call('EXPIRE', listed_key, ttl)
  end
end
"""
"""Lua defining `schedule_envelope(...)`, for every script that puts a task message into the retry schedule
(the enqueue of a delayed run, a retry, a deferred copy): it is also listed in its request's envelope set
(`keys.scheduled_envelopes_key`, '' for a message of no known request), kept `ttl` seconds, so a cancel
removes exactly that request's messages."""


class TooFarAhead(InvalidRequest):
    """The request's run time is too far ahead."""


def due_at(request: TriggerRequest, state_ttl: int, now: float | None = None) -> float | None:
    """When the request is due (epoch seconds), or None to run it now (no `not_before`, or one passed).

    `TooFarAhead` when it is `state_ttl` seconds ahead or more: its state would expire before it ran.
    """
    if request.not_before is None:
        return None
    due, now = request.not_before.timestamp(), time.time() if now is None else now
    if due <= now:
        return None
    if due - now >= state_ttl:
        ahead, limit = f"{(due - now) / 3600:.1f} h", f"{state_ttl / 3600:.1f} h (TRIGGER_STATE_TTL={state_ttl}s)"
        problem = f"is {ahead} ahead; a request may wait at most {limit}, or its state expires before it runs"
        raise TooFarAhead(details=[Problem("not_before", problem)])
    return due


def first_state(request: TriggerRequest, due: float | None) -> RequestState:
    """The state the producer records: `queued`, or `scheduled` with its due time as `next_attempt_at`."""
    state = RequestState.queued(request)
    if due is None:
        return state
    return state.model_copy(
        update={"status": Status.SCHEDULED, "next_attempt_at": datetime.fromtimestamp(due, timezone.utc)}
    )


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$")
_UNIT_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_at(text: str) -> datetime:
    """`--at`: an ISO 8601 time with its timezone (`2026-11-27T02:00:00Z`); `ValueError` saying what is wrong."""
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(f"{text!r} is not an ISO 8601 time such as 2026-11-27T02:00:00Z") from None
    if when.tzinfo is None:
        raise ValueError(f"{text!r} has no timezone; add one, such as Z or +01:00")
    return when


def parse_in(text: str, now: datetime | None = None) -> datetime:
    """`--in`: a delay such as `90`, `45s`, `10m`, `2h` or `1d`, as the aware time it ends at."""
    match = _DURATION.match(text)
    if not match:
        raise ValueError(f"{text!r} is not a delay such as 90, 45s, 10m, 2h or 1d")
    seconds = float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    return (now or datetime.now(timezone.utc)) + timedelta(seconds=seconds)
