"""Cancelling a request: `trigger cancel ID` and `TriggerClient.cancel`, the same for both clients.

A request no worker has started (`queued`, `retrying`, or deferred in the retry schedule) ends
`cancelled` in one Lua call that also takes it out of everything still holding it: its envelopes
in the retry schedule, its idempotency claim, the coalescing keys it holds, the waiting index,
and raises its outcome count. The call is a compare-and-set against the state as read, so a
worker that moved the request on meanwhile (started it) makes the cancel look again instead of
overwriting it. Copies of its message still on the queue then find a terminal state and start
nothing (the worker's own "already finished" checks, up to the fenced write of `running`).

A `running` request is only cancelled once ZenML agreed to stop its run (`producers.run_stop`);
a request that ended cannot be cancelled.
"""

from __future__ import annotations

import getpass
import socket
from collections.abc import Iterable
from typing import NamedTuple

from producers import keys
from producers.errors import NotCancellable
from producers.run_stop import RunStopper
from producers.settings import ProducerSettings
from producers.state import CancelInfo, RequestState, Status
from producers.stats import outcome_field, pipeline_label

CANCEL_SCRIPT = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 'changed' end
local me = ARGV[5]
redis.call('SET', KEYS[1], ARGV[2], 'EX', ARGV[3])
redis.call('HINCRBY', KEYS[9], ARGV[4], 1)
for _, envelope in ipairs(redis.call('SMEMBERS', KEYS[6])) do redis.call('ZREM', KEYS[5], envelope) end
redis.call('DEL', KEYS[6])
for _, claim in ipairs({KEYS[2], KEYS[3], KEYS[4]}) do
  if redis.call('GET', claim) == me then redis.call('DEL', claim) end
end
redis.call('ZREM', KEYS[7], me)
redis.call('HDEL', KEYS[8], me)
return 'ok'
"""
"""KEYS: state, idempotency claim, coalescing key's latest, its running lock, retry schedule, the request's
scheduled-envelope set, waiting index, waiting messages, outcome counts. ARGV: the state as read, the
cancelled state, state TTL, outcome-count field, request id. 'changed' when the state moved on since it was
read (nothing written); else 'ok'. Claims are released only where this request still holds them."""

CANCEL_TRIES = 10
"""Reads of a state that keeps changing (a running request's step being noted) before the cancel gives up."""


class CancelCall(NamedTuple):
    """`CANCEL_SCRIPT`'s KEYS and ARGV, built in one place for the sync and async clients."""

    keys: list[str]
    args: list[str | bytes | int]


def who_cancels() -> str:
    """Who cancels, when the caller does not say: the OS user at this host."""
    try:
        user = getpass.getuser()
    except (OSError, KeyError):  # no login name in this container
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


def cancelled(state: RequestState, by: str, reason: str | None, run_stop: str | None = None) -> RequestState:
    """`state` ended `cancelled` by `by`; `NotCancellable` if it ended already."""
    if state.status.terminal:
        raise NotCancellable(
            f"request {state.request_id} already ended {state.status.value}; a request that ended cannot be cancelled"
        )
    info = CancelInfo(by=by, reason=reason, run_stop=run_stop)
    return state.advance(Status.CANCELLED, cancelled=info, next_attempt_at=None)


def stop_run(stopper: RunStopper, state: RequestState) -> str:
    """Ask `stopper` to stop a running request's ZenML run: what it did, or `NotCancellable` saying why not."""
    result = stopper.stop(state)
    if not result.stopped:
        raise NotCancellable(f"request {state.request_id} is running and was not cancelled: {result.message}")
    return result.message


def cancel_call(settings: ProducerSettings, read: bytes, state: RequestState, pipelines: Iterable[str]) -> CancelCall:
    """What `CANCEL_SCRIPT` needs to replace the state exactly as `read` with the cancelled `state`; the
    outcome is counted under its pipeline when the workers' catalog lists it (`pipelines`), else `other`."""
    request_id, queue = state.request_id, settings.queue
    counted_as = outcome_field(pipeline_label(state.pipeline_name, frozenset(pipelines)), state.status.value)
    return CancelCall(
        keys=[
            keys.state_key(request_id),
            keys.idempotency_key(state.idempotency_key or ""),
            keys.coalesce_latest_key(state.coalesce_key or ""),
            keys.coalesce_running_key(state.coalesce_key or ""),
            keys.retry_schedule_key(queue),
            keys.scheduled_envelopes_key(queue, request_id),
            keys.waiting_key(queue),
            keys.waiting_messages_key(queue),
            keys.outcome_counts_key(queue),
        ],
        args=[read, state.to_json(), settings.state_ttl, counted_as, request_id],
    )


def kept_changing(request_id: str) -> NotCancellable:
    """The error when the state changed under every one of `CANCEL_TRIES` attempts."""
    return NotCancellable(f"request {request_id} changed {CANCEL_TRIES} times while being cancelled; try again")
