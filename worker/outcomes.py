"""Recording a request's state: one atomic, fenced write per step of its life.

A step's whole effect (the state, and with it a dead letter, the release of the
idempotency key, or the next attempt in the retry schedule) is one Lua call, so a crash
or a Redis stall can never leave half of it. The write itself refuses what must never
happen: overwriting a terminal state, or a worker that no longer holds the request's
lease recording anything (fencing). The lease holds `holder:token`, with a token issued anew at
each acquisition (`worker.lease`), so "the lease holds my fence" means "no worker took the request
over since I acquired it": a stale worker's write is refused even when the lease is free again.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

from producers import keys
from producers.delayed import SCHEDULE_ENVELOPE
from producers.request_index import INDEX_REQUEST
from producers.state import TERMINAL, RequestState, StateStore
from producers.stats import outcome_field, pipeline_label
from worker.dead_letters import ADD_LETTER, LETTER_KEYS, LETTER_PREFIX, DeadLetter, DeadLetterStore
from worker.schedule import RetrySchedule

_RECORD = (
    ADD_LETTER
    + INDEX_REQUEST
    + SCHEDULE_ENVELOPE
    + """
local state_key, lease_key, claim_key, schedule_key = KEYS[5], KEYS[6], KEYS[7], KEYS[8]
local holder = ARGV[2]
if holder ~= '' and redis.call('GET', lease_key) ~= holder then return 'fenced' end
local current = redis.call('GET', state_key)
if current then
  local status = cjson.decode(current)['status']
  for _, name in ipairs(cjson.decode(ARGV[5])) do
    if name == status then return 'terminal' end
  end
end
if not current then index_request(KEYS[13], ARGV[16], ARGV[4]) end
redis.call('SET', state_key, ARGV[3], 'EX', ARGV[4])
if holder ~= '' then
  redis.call('HSET', KEYS[14], 'owner', string.match(holder, ':(%d+)$') or '0')
  redis.call('EXPIRE', KEYS[14], ARGV[4])
end
if ARGV[17] ~= '' then redis.call('HINCRBY', KEYS[11], ARGV[17], 1) end
if ARGV[6] ~= '' then add_letter(ARGV[6], ARGV[7], ARGV[8], ARGV[9], ARGV[10], ARGV[11]) end
if ARGV[12] ~= '' and redis.call('GET', claim_key) == ARGV[12] then redis.call('DEL', claim_key) end
if ARGV[13] ~= '' then schedule_envelope(schedule_key, KEYS[12], ARGV[13], ARGV[14], ARGV[4]) end
if ARGV[15] ~= 'queued' then
  redis.call('ZREM', KEYS[9], ARGV[16])
  redis.call('HDEL', KEYS[10], ARGV[16])
end
return 'ok'
"""
)
"""KEYS: the four letter keys, state, lease, claim, schedule, waiting index, waiting messages, outcome counts,
the request's scheduled-envelope set, requests index (a state written first here, under an id of the worker's own,
enters it), lease tokens (a fenced write makes its token the request's owner: no older lease may be taken back).
ARGV: letter prefix, fence ('' = not fenced), state JSON, state TTL, terminal statuses (JSON), letter args (6,
or '' and five blanks), claim owner ('' = keep), envelope ('' = none), due, status, request id, outcome field
('' = not terminal). Returns 'ok', 'fenced' or 'terminal'. Any status but `queued` means a worker took the
request on: it is no longer waiting. A terminal state is counted in the same call that writes it: once."""

_AMEND = """
if redis.call('GET', KEYS[2]) ~= ARGV[1] then return 'fenced' end
if redis.call('GET', KEYS[1]) ~= ARGV[2] then return 'changed' end
redis.call('SET', KEYS[1], ARGV[3], 'KEEPTTL')
return 'ok'
"""
"""KEYS: state, lease. ARGV: fence, the state as read, the amended state. A compare-and-set fenced by the
lease: 'fenced' when the lease no longer holds the fence, 'changed' when the state moved on since it was read."""

_TERMINAL = json.dumps(sorted(status.value for status in TERMINAL))
_NO_LETTER = ["", "", 0, 0, 0, 0]


class Refused(Exception):
    """A write the protocol forbids: the request already ended, or this worker lost its lease."""

    def __init__(self, reason: str, request_id: str) -> None:
        super().__init__(f"{request_id}: {reason}")
        self.reason, self.request_id = reason, request_id


@dataclass(frozen=True)
class Step:
    """One step of a request's life: its new state and what must happen with it, atomically."""

    state: RequestState
    letter: DeadLetter | None = None
    release_claim: bool = False
    next_attempt: tuple[str, float] | None = None  # (task envelope, due epoch seconds)


class Observer(Protocol):
    """Told of every step once Redis took it (metrics); must be cheap and must not raise."""

    def recorded(self, step: Step) -> None:
        """`step` was written."""

    def refused(self, step: Step) -> None:
        """`step` was refused (fenced, or the request had ended)."""

    def ended_early(self, state: RequestState) -> None:
        """`worker.early` ended a request on arrival in `state`."""


class Unobserved:
    """The observer when metrics are off."""

    def recorded(self, step: Step) -> None:
        """Nothing to do."""

    def refused(self, step: Step) -> None:
        """Nothing to do."""

    def ended_early(self, state: RequestState) -> None:
        """Nothing to do."""


class Outcomes:
    """Writes `Step`s: state, dead letter, claim release and retry in one fenced Lua call."""

    def __init__(
        self,
        states: StateStore,
        letters: DeadLetterStore,
        schedule: RetrySchedule,
        observer: Observer | None = None,
        pipelines: Iterable[str] = (),
    ) -> None:
        self.states = states
        self.letters = letters
        self.schedule = schedule
        self.observer = observer or Unobserved()
        self.pipelines = frozenset(pipelines)
        self.counts_key = keys.outcome_counts_key(schedule.queue)
        self._record = states.client.register_script(_RECORD)
        self._amend = states.client.register_script(_AMEND)

    def record(self, step: Step, holder: str | None) -> None:
        """Write `step`, conditional on the lease holding `holder` (a `Leases.fence`) when given; `Refused` when
        the protocol forbids it."""
        state = step.state
        claim = state.idempotency_key if step.release_claim and state.idempotency_key else None
        envelope, due = step.next_attempt or ("", 0)
        letter = self.letters.letter_args(step.letter) if step.letter is not None else _NO_LETTER
        keys_ = [
            *LETTER_KEYS,
            keys.state_key(state.request_id),
            keys.lease_key(state.request_id),
            keys.idempotency_key(claim or ""),
            self.schedule.key,
            keys.waiting_key(self.schedule.queue),
            keys.waiting_messages_key(self.schedule.queue),
            self.counts_key,
            keys.scheduled_envelopes_key(self.schedule.queue, state.request_id),
            keys.REQUESTS_INDEX_KEY,
            keys.lease_token_key(state.request_id),
        ]
        args = [LETTER_PREFIX, holder or "", state.to_json(), self.states.ttl, _TERMINAL, *letter]
        args += [state.request_id if claim else "", envelope, due, state.status.value, state.request_id]
        args.append(self.counted_as(state) if state.status.terminal else "")
        result = self._record(keys=keys_, args=args)
        reason = result.decode() if isinstance(result, bytes) else str(result)
        if reason != "ok":
            self.observer.refused(step)
            raise Refused(reason, state.request_id)
        self.observer.recorded(step)

    def amend(self, read: bytes, state: RequestState, holder: str) -> str:
        """Replace the state exactly as `read` with `state` while the lease holds the fence `holder`: 'ok',
        'fenced' or 'changed'.

        For details of a running attempt (the ZenML step it is in) written beside the walk's own writes,
        which always win: anything they wrote since `read` makes this a no-op.
        """
        keys_ = [keys.state_key(state.request_id), keys.lease_key(state.request_id)]
        result = self._amend(keys=keys_, args=[holder, read, state.to_json()])
        return result.decode() if isinstance(result, bytes) else str(result)

    def counted_as(self, state: RequestState) -> str:
        """The outcome-count field a terminal `state` raises (see `producers.stats`)."""
        return outcome_field(pipeline_label(state.pipeline_name, self.pipelines), state.status.value)
