"""Admission controls: small objects the walk asks, in one chain, just before a run starts.

Each answers admit, defer (look again later, through the retry schedule: never rejected,
never dropped) or end (the request ends in the state it gives, and starts nothing). They
are asked under the request's lease, so their answer and the run that follows cannot race
another copy of the same request.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, Protocol

import redis
import structlog

from producers import keys
from producers.contract import TriggerRequest
from producers.state import RequestState, Status
from worker.scripts import RELEASE_IF_OWNER_FENCED

SUPERSEDE = """
local function supersede(me, latest, covered_prefix, count_prefix, ttl, most)
  local into, mine = covered_prefix .. latest, covered_prefix .. me
  local count_into, count_mine = count_prefix .. latest, count_prefix .. me
  local covered = redis.call('LRANGE', mine, 0, most - 1)
  redis.call('LPUSH', into, me)
  for _, id in ipairs(covered) do redis.call('RPUSH', into, id) end
  redis.call('LTRIM', into, 0, most - 1)
  redis.call('INCRBY', count_into, 1 + tonumber(redis.call('GET', count_mine) or '0'))
  redis.call('EXPIRE', into, ttl)
  redis.call('EXPIRE', count_into, ttl)
  redis.call('DEL', mine, count_mine)
end
"""
"""`supersede(...)`: `me` is covered by the newer `latest`, and so is everything `me` covered (ids bounded
by `most`, the count in full); shared by the admission below and the early end (`worker.early`)."""

_COALESCE = (
    SUPERSEDE
    + """
local latest = redis.call('GET', KEYS[1])
local me = ARGV[1]
if latest and latest ~= me then
  supersede(me, latest, ARGV[3], ARGV[4], ARGV[5], tonumber(ARGV[6]))
  return {'superseded', latest}
end
local running = redis.call('GET', KEYS[2])
if running and running ~= me then return {'wait', running} end
redis.call('SET', KEYS[2], me, 'EX', ARGV[2])
return {'admit', ''}
"""
)
"""KEYS: the key's latest, its running lock. ARGV: request id, lock TTL, covered-list prefix, count prefix,
state TTL, most covered ids kept. A request that is not the key's latest is superseded (its covered
requests move to the latest); the latest waits while another request's run holds the lock, else takes it."""


log = structlog.get_logger("zenml_trigger")

MAX_COVERED = 100
"""Most request ids a run's state lists in `coalesced_from` (the count is kept in full)."""


@dataclass(frozen=True)
class Verdict:
    """An admission control's answer."""

    kind: Literal["admit", "defer", "end"]
    reason: str = ""
    delay: float = 0.0
    state: RequestState | None = None


ADMIT = Verdict("admit")


class Admission(Protocol):
    """One control in the chain."""

    def decide(self, request: TriggerRequest, state: RequestState) -> Verdict:
        """Admit, defer or end the request, just before its run starts; `state` names the pipeline and
        template (`pipeline_name`, `template_ref`) the request resolved to."""
        ...

    def release(self, request: TriggerRequest) -> None:
        """The request's attempt is over (whatever its outcome): give back what `decide` took."""
        ...


class Coalescing:
    """Latest wins, at most one run in flight and one pending per coalescing key, across all workers.

    "Latest" is decided by the producer's enqueue (the key's latest request id is written in the
    same Lua call as the message). A request that is no longer its key's latest when it would
    start ends `coalesced` into the newer one; the latest waits while a run for its key is in
    flight. The in-flight lock lives as long as the lease (the heartbeat keeps it), so a killed
    worker's key is runnable again once its lease runs out; it is freed only under the request's lease
    (`fence`: request id -> this worker's `Leases.fence`), so a worker that stalled past its lease never
    frees the lock of the run that took over.
    """

    def __init__(
        self,
        client: redis.Redis,
        lock_ttl: int,
        state_ttl: int,
        poll: float,
        fence: Callable[[str], str | None] = lambda request_id: None,
    ) -> None:
        self.client, self.lock_ttl, self.state_ttl, self.poll = client, lock_ttl, state_ttl, poll
        self.fence = fence
        self._held: set[str] = set()
        self._decide = client.register_script(_COALESCE)
        self._release = client.register_script(RELEASE_IF_OWNER_FENCED)

    def decide(self, request: TriggerRequest, state: RequestState) -> Verdict:
        """Supersede, wait or admit (and then hold the key's in-flight lock)."""
        key = request.coalesce_key
        if key is None:
            return ADMIT
        kind, other = self._ask(key, request.request_id)
        if kind == "superseded":
            ended = state.advance(Status.COALESCED, coalesced_into=other, attempts=state.attempts)
            return Verdict("end", reason=f"superseded by {other}, a newer request for {key!r}", state=ended)
        if kind == "wait":
            return Verdict("defer", reason=f"a run for coalescing key {key!r} is in flight ({other})", delay=self.poll)
        self._held.add(request.request_id)
        return ADMIT

    def release(self, request: TriggerRequest) -> None:
        """Free the key's in-flight lock if this copy took it, under its lease (a fenced one expires instead): a copy
        that only looked, and deferred behind the run, leaves that run's lock alone."""
        if request.coalesce_key is None or request.request_id not in self._held:
            return
        self._held.discard(request.request_id)
        rid = request.request_id
        keys_ = [keys.coalesce_running_key(request.coalesce_key), keys.lease_key(rid)]
        if self._release(keys=keys_, args=[rid, self.fence(rid) or ""]) == -1:
            log.warning("trigger.fenced", request_id=rid, reason="kept the coalescing lock: another worker took over")

    def covered(self, request_id: str) -> tuple[list[str], int]:
        """The requests coalesced into `request_id` (up to `MAX_COVERED`) and how many in all."""
        pipe = self.client.pipeline(transaction=False)
        pipe.lrange(keys.COALESCED_FROM_PREFIX + request_id, 0, MAX_COVERED - 1)
        pipe.get(keys.COALESCED_COUNT_PREFIX + request_id)
        ids, count = pipe.execute()
        return [i.decode() for i in ids], int(count or 0)

    def _ask(self, key: str, request_id: str) -> tuple[str, str]:
        keys_ = [keys.coalesce_latest_key(key), keys.coalesce_running_key(key)]
        args = [request_id, self.lock_ttl, keys.COALESCED_FROM_PREFIX, keys.COALESCED_COUNT_PREFIX, self.state_ttl]
        kind, other = self._decide(keys=keys_, args=[*args, MAX_COVERED])
        return kind.decode(), other.decode()
