"""Concurrency limits: at most N runs at once of a pipeline or a template, across all workers.

A run takes a slot in the limit's Redis sorted set (members are request ids, scores the time
each was admitted) as the last step of the admission chain, and gives it back when its attempt
is over. A slot is only as alive as its request's lease: the admission first drops the members
whose lease key is gone, so a killed worker's slot frees itself once its lease runs out, with no
heartbeat of its own. Only the lease key's existence is read, never its value (the holder).
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterable, Mapping

import redis

from producers import keys
from producers.contract import TriggerRequest
from producers.logs import get_logger
from producers.state import RequestState
from worker.admission import ADMIT, Verdict

TEMPLATE_PREFIX = "template:"
"""A limit key naming a template rather than a pipeline, as in `TRIGGER_RUN_TIMEOUTS`."""
JITTER = (0.8, 1.2)
"""A waiting request's next look is spread by this factor, so waiters deferred together do not return together."""

_TAKE = """
local slots, waiters, me = KEYS[1], KEYS[2], ARGV[1]
local most, now, poll = tonumber(ARGV[2]), tonumber(ARGV[4]), tonumber(ARGV[5])
for _, id in ipairs(redis.call('ZRANGE', slots, 0, -1)) do
  if id ~= me and redis.call('EXISTS', ARGV[3] .. id) == 0 then redis.call('ZREM', slots, id) end
end
if redis.call('ZSCORE', slots, me) or redis.call('ZCARD', slots) < most then
  redis.call('ZADD', slots, 'NX', now, me)
  redis.call('ZREM', waiters, me)
  return {1, '', '0'}
end
redis.call('ZREMRANGEBYSCORE', waiters, '-inf', now - 3 * poll)
redis.call('ZREM', waiters, me)
local delay = poll * math.max(1, (redis.call('ZCARD', waiters) + 1) / most) * tonumber(ARGV[6])
redis.call('ZADD', waiters, now + delay, me)
local last = tonumber(redis.call('ZRANGE', waiters, -1, -1, 'WITHSCORES')[2])
redis.call('EXPIRE', waiters, math.ceil(last - now + 3 * poll))
return {0, table.concat(redis.call('ZRANGE', slots, 0, 2), ', '), tostring(delay)}
"""
"""KEYS: the limit's slots, its waiters. ARGV: request id, limit, lease key prefix, now, poll, jitter factor.
Drop the slots whose request holds no lease any more, then take one (or keep ours, for a request admitted
before) if fewer than the limit are held: {1, '', '0'}. Else wait: {0, the first few holders, delay}. The
delay grows with the number of waiters (those due back within three polls) per slot, so the waiters of a
limit are looked at about `limit / poll` times a second in all, however many there are, and a freed slot is
still found within about `poll / limit` seconds."""


def checked_limits(value: object) -> dict[str, int]:
    """`TRIGGER_CONCURRENCY_LIMITS` as given, or a `ValueError` naming the first bad entry."""
    if not isinstance(value, Mapping):
        raise ValueError(f'must be a JSON object of {{"PIPELINE" or "template:NAME": runs at once}}, not {value!r}')
    for name, most in value.items():
        problem = _name_problem(name) or _count_problem(most)
        if problem:
            raise ValueError(f"entry {name!r}: {problem}")
    return dict(value)


def _name_problem(name: object) -> str | None:
    if not isinstance(name, str) or not name.strip() or name != name.strip():
        return "the name must be a pipeline name or template:NAME, without surrounding spaces"
    if name.startswith(TEMPLATE_PREFIX) and not name.removeprefix(TEMPLATE_PREFIX).strip():
        return "template: must be followed by the template's name"
    return None


def _count_problem(most: object) -> str | None:
    if isinstance(most, bool) or not isinstance(most, int) or most < 1:
        return f"the limit must be a whole number of runs, at least 1, not {most!r}"
    return None


def limit_name(limits: Mapping[str, int], pipeline: str | None, template_ref: str | None) -> str | None:
    """The limit a run counts against: its template's (`template:NAME`), else its pipeline's, else none.

    The same rule as the run time limits (`TRIGGER_RUN_TIMEOUTS`): a template's limit replaces its
    pipeline's, so a template run counts against one limit only. `template_ref` is `NAME@VERSION`.
    """
    template = TEMPLATE_PREFIX + template_ref.rpartition("@")[0] if template_ref else None
    if template is not None and template in limits:
        return template
    return pipeline if pipeline is not None and pipeline in limits else None


class ConcurrencyLimits:
    """The admission control for `TRIGGER_CONCURRENCY_LIMITS`: admit while a slot is free, else defer.

    It reads the pipeline and template the request resolved to from the state the chain is given
    (`state.pipeline_name`, `state.template_ref`). A deferred request is looked at again through
    the retry schedule, keeping its attempt number, `poll` seconds later when it waits alone and
    proportionally later behind a backlog (see `_TAKE`); no order is promised among the waiters.
    """

    def __init__(
        self,
        client: redis.Redis,
        limits: Mapping[str, int],
        queue: str,
        poll: float,
        pipelines: Iterable[str] = (),
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.limits, self.queue, self.poll, self.clock = dict(limits), queue, poll, clock
        self._client, self._take = client, client.register_script(_TAKE)
        self._taken: dict[str, str] = {}
        """Request id -> limit name of the slots this process took and has not given back yet."""
        _warn_unregistered(self.limits, frozenset(pipelines))

    def decide(self, request: TriggerRequest, state: RequestState) -> Verdict:
        """Take a slot of the run's limit, or defer while all of them are held by live runs."""
        name = limit_name(self.limits, state.pipeline_name, state.template_ref)
        if name is None:
            return ADMIT
        taken, holders, delay = self._ask(name, request.request_id)
        if taken:
            self._taken[request.request_id] = name
            return ADMIT
        reason = f"concurrency limit {name!r} ({self.limits[name]}) is full, held by {holders}"
        return Verdict("defer", reason=reason, delay=delay)

    def release(self, request: TriggerRequest) -> None:
        """Give back the slot this process took for the request, if it took one.

        Only the pass that took a slot gives it back: a copy that found the request running elsewhere
        (its holder stalled past the lease) must not free the slot that holder's run still uses.
        """
        name = self._taken.pop(request.request_id, None)
        if name is not None:
            self._client.zrem(keys.concurrency_slots_key(self.queue, name), request.request_id)

    def held(self, name: str) -> list[str]:
        """The request ids holding a slot of limit `name`, oldest first (slots of dead runs included
        until the next admission drops them)."""
        members = self._client.zrange(keys.concurrency_slots_key(self.queue, name), 0, -1)
        return [member.decode() for member in members]

    def _ask(self, name: str, request_id: str) -> tuple[bool, str, float]:
        keys_ = [keys.concurrency_slots_key(self.queue, name), keys.concurrency_waiting_key(self.queue, name)]
        args = [request_id, self.limits[name], keys.lease_key(""), self.clock(), self.poll, random.uniform(*JITTER)]
        taken, holders, delay = self._take(keys=keys_, args=args)
        return bool(taken), holders.decode(), float(delay)


def _warn_unregistered(limits: Mapping[str, int], pipelines: frozenset[str]) -> None:
    """A limit on a pipeline this worker does not register is most likely a typo: say so once, at start."""
    unknown = sorted(n for n in limits if not n.startswith(TEMPLATE_PREFIX) and n not in pipelines)
    if unknown and pipelines:
        get_logger().warning("trigger.limit_unregistered", limits=unknown, registered=sorted(pipelines))
