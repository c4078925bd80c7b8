"""The early end: one Redis round trip that ends a duplicate or a superseded request as it arrives.

A storm of alerts for one key, or of retries with one idempotency key, is mostly requests
that will start nothing. Deciding each under the full walk (lease, heartbeat, re-read, admission,
record, release) costs seven round trips and a thread; here one Lua call reads the state,
checks the lease, the idempotency owner and the key's latest request, and, when the request is
a plain `duplicate` or `coalesced`, writes that terminal state. Anything else (a state past
`queued`, a lease held by another copy, a request that may run) goes the full way, where the
same decisions are taken again under the lease.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass

import redis

from producers import keys
from producers.contract import TriggerRequest
from producers.request_index import INDEX_REQUEST
from producers.state import RequestState, Status
from producers.stats import outcome_field, pipeline_label
from worker.admission import MAX_COVERED, SUPERSEDE
from worker.outcomes import Observer, Unobserved

_EARLY = (
    SUPERSEDE
    + INDEX_REQUEST
    + """
local state_key, lease_key, claim_key, latest_key = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local me, slot = ARGV[1], ARGV[2]
local current = redis.call('GET', state_key)
if current then
  local stored = cjson.decode(current)
  if stored['status'] ~= 'queued' and stored['status'] ~= 'scheduled' then return {'state', current} end
  local parts = {}
  for _, field in ipairs({'source', 'pipeline_name', 'template', 'idempotency_key', 'coalesce_key', 'replay_of'}) do
    local value = stored[field]
    if value == nil or value == cjson.null then value = '' end
    parts[#parts + 1] = tostring(value)
  end
  -- the record is another request's (a message sent under its id): only the full walk decides that
  if table.concat(parts, '\\n') ~= ARGV[9] then return {'state', current} end
end
if redis.call('EXISTS', lease_key) == 1 then return {'state', current or ''} end
local function finish(template, other, counted_as)
  local first, last = string.find(template, slot, 1, true)
  local record = string.sub(template, 1, first - 1) .. cjson.encode(other) .. string.sub(template, last + 1)
  if not current then index_request(KEYS[8], me, ARGV[5]) end
  redis.call('SET', state_key, record, 'EX', ARGV[5])
  redis.call('HINCRBY', KEYS[7], counted_as, 1)
  redis.call('ZREM', KEYS[5], me)
  redis.call('HDEL', KEYS[6], me)
end
if ARGV[3] ~= '' then
  local owner = redis.call('GET', claim_key)
  if owner and owner ~= me then
    finish(ARGV[3], owner, ARGV[10])
    return {'duplicate', owner}
  end
end
if ARGV[4] ~= '' then
  local latest = redis.call('GET', latest_key)
  if latest and latest ~= me then
    supersede(me, latest, ARGV[6], ARGV[7], ARGV[5], tonumber(ARGV[8]))
    finish(ARGV[4], latest, ARGV[11])
    return {'coalesced', latest}
  end
end
return {'state', current or ''}
"""
)
"""KEYS: state, lease, idempotency claim, coalescing key's latest, waiting index, waiting messages, outcome
counts, requests index. ARGV: request id, the JSON slot the other request's id fills, the `duplicate` state ('' = no
idempotency key), the `coalesced` state ('' = no coalescing key), state TTL, covered-list prefix, count prefix,
most covered ids kept, the request's identity (`IDENTITY` fields, newline-joined), the outcome-count fields of
`duplicate` and `coalesced` (raised with the state they count). Only a `queued` or `scheduled` (or unrecorded) request
nobody leases, whose record is this request's own, is ended here; an unrecorded one enters the requests index."""

IDENTITY = ("source", "pipeline_name", "template", "idempotency_key", "coalesce_key", "replay_of")
"""Fields a message must share with the stored record to end it early: a message sent under another request's
id (a producer reusing an id, or someone taking one over) never ends that request here."""


@dataclass(frozen=True)
class EarlyVerdict:
    """What the early check found: the terminal state it ended the request in, else its stored state."""

    ended: RequestState | None = None
    stored: RequestState | None = None


class EarlyEnds:
    """Ends duplicates and superseded requests in one atomic round trip, before any lease is taken."""

    def __init__(
        self,
        client: redis.Redis,
        queue: str,
        state_ttl: int,
        worker: str,
        observer: Observer | None = None,
        pipelines: Iterable[str] = (),
    ) -> None:
        self.state_ttl, self.worker = state_ttl, worker
        self.waiting = [keys.waiting_key(queue), keys.waiting_messages_key(queue), keys.outcome_counts_key(queue)]
        self.waiting.append(keys.REQUESTS_INDEX_KEY)
        self.observer = observer or Unobserved()
        self.pipelines = frozenset(pipelines)
        self._early = client.register_script(_EARLY)

    def check(self, request: TriggerRequest) -> EarlyVerdict:
        """End `request` if it is a duplicate or superseded; else return its stored state (None if none)."""
        slot = os.urandom(12).hex()
        duplicate, coalesced = self._candidates(request, slot)
        keys_ = [
            keys.state_key(request.request_id),
            keys.lease_key(request.request_id),
            keys.idempotency_key(request.idempotency_key or ""),
            keys.coalesce_latest_key(request.coalesce_key or ""),
            *self.waiting,
        ]
        records = [r.to_json() if r is not None else "" for r in (duplicate, coalesced)]
        args = [request.request_id, f'"{slot}"', *records, self.state_ttl]
        args += [keys.COALESCED_FROM_PREFIX, keys.COALESCED_COUNT_PREFIX, MAX_COVERED, identity(request)]
        args += self._counted_as(request)
        kind, found = (part.decode() for part in self._early(keys=keys_, args=args))
        if kind == "duplicate" and duplicate is not None:
            return self._ended(duplicate.model_copy(update={"duplicate_of": found}))
        if kind == "coalesced" and coalesced is not None:
            return self._ended(coalesced.model_copy(update={"coalesced_into": found}))
        return EarlyVerdict(stored=RequestState.model_validate_json(found) if found else None)

    def _ended(self, state: RequestState) -> EarlyVerdict:
        self.observer.ended_early(state)
        return EarlyVerdict(ended=state)

    def _counted_as(self, request: TriggerRequest) -> list[str]:
        """The outcome-count fields of a `duplicate` and a `coalesced` end of `request`."""
        pipeline = pipeline_label(request.pipeline_name, self.pipelines)
        return [outcome_field(pipeline, status.value) for status in (Status.DUPLICATE, Status.COALESCED)]

    def _candidates(self, request: TriggerRequest, slot: str) -> tuple[RequestState | None, RequestState | None]:
        """The two terminal states the request may end in here, with `slot` where the other request's id goes."""
        queued = RequestState.queued(request)
        duplicate = coalesced = None
        if request.idempotency_key is not None:
            duplicate = queued.advance(Status.DUPLICATE, duplicate_of=slot, attempts=1, worker=self.worker)
        if request.coalesce_key is not None:
            coalesced = queued.advance(Status.COALESCED, coalesced_into=slot, worker=self.worker)
        return duplicate, coalesced


def identity(request: TriggerRequest) -> str:
    """The `IDENTITY` fields of `request`, as the early-end script compares them with the stored record."""
    return "\n".join(str(getattr(request, field) or "") for field in IDENTITY)
