"""Request state: what `trigger status` and `TriggerClient.status` show, kept in Redis by id."""

from __future__ import annotations

import time
from datetime import datetime
from enum import Enum
from typing import Any

import redis
from pydantic import BaseModel, ConfigDict, Field, JsonValue, field_validator

from producers import keys
from producers.contract import TriggerRequest, utc_now
from producers.errors import UnknownRequest


class Status(str, Enum):
    """Where a request is; see `TERMINAL` for the end states."""

    QUEUED = "queued"
    SCHEDULED = "scheduled"
    """Held in the retry schedule until its `not_before` (`next_attempt_at`), then run as if `queued`."""
    RUNNING = "running"
    RETRYING = "retrying"
    SUBMITTED = "submitted"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    REJECTED = "rejected"
    DUPLICATE = "duplicate"
    COALESCED = "coalesced"
    CANCELLED = "cancelled"
    DEAD_LETTERED = "dead_lettered"

    @property
    def terminal(self) -> bool:
        """True once nothing more will happen to the request."""
        return self in TERMINAL


TERMINAL = frozenset(
    {
        Status.SUCCEEDED,
        Status.FAILED,
        Status.REJECTED,
        Status.DUPLICATE,
        Status.COALESCED,
        Status.CANCELLED,
        Status.DEAD_LETTERED,
        Status.SUBMITTED,
    }
)
"""End states. `submitted` ends the worker's part for a server run it was told not to follow."""

NOT_STARTED = frozenset({Status.QUEUED, Status.SCHEDULED})
"""States of a request no worker has taken on yet: a `scheduled` one that arrives is handled as `queued`."""


POLL_INTERVAL = 0.1
"""Seconds between two looks at a request's state while waiting for it to end (both clients)."""

MAX_ERROR_CHARS = 2000
MAX_ERROR_DETAILS = 50


class ErrorInfo(BaseModel):
    """Why a request did not succeed; bounded and always storable, whatever text the error carried."""

    type: str
    message: str
    details: list[dict[str, str]] = Field(default_factory=list)

    @field_validator("type", "message", mode="after")
    @classmethod
    def _storable(cls, text: str) -> str:
        return storable_text(text)

    @field_validator("details", mode="after")
    @classmethod
    def _bounded(cls, details: list[dict[str, str]]) -> list[dict[str, str]]:
        kept = [{storable_text(k, 200): storable_text(v) for k, v in d.items()} for d in details[:MAX_ERROR_DETAILS]]
        if len(details) > MAX_ERROR_DETAILS:
            kept.append({"path": "", "problem": f"... and {len(details) - MAX_ERROR_DETAILS} more problems"})
        return kept


def storable_text(text: str, limit: int = MAX_ERROR_CHARS) -> str:
    """`text` with unencodable characters escaped, then cut to `limit` characters with its length noted.

    The one helper for any text a record keeps from a message or an error (states, dead letters).
    """
    text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... [{len(text):,} chars]"


class CancelInfo(BaseModel):
    """Who cancelled a request, when and why (`trigger cancel`), and what became of its ZenML run."""

    by: str
    at: datetime = Field(default_factory=utc_now)
    reason: str | None = None
    run_stop: str | None = None
    """For a request cancelled while running: what ZenML was asked and answered; None when it had not started."""

    @field_validator("by", "reason", "run_stop", mode="after")
    @classmethod
    def _storable(cls, text: str | None) -> str | None:
        return storable_text(text, 500) if text is not None else None


class RequestState(BaseModel):
    """One request's life, as recorded by the producer and then the worker."""

    model_config = ConfigDict(use_enum_values=False)

    request_id: str
    status: Status
    pipeline_name: str | None = None
    template: str | None = None
    template_ref: str | None = None
    source: str | None = None
    idempotency_key: str | None = None
    coalesce_key: str | None = None
    priority: int | None = None
    """The request's wire priority (`producers.priority`); None is routine."""
    attempts: int = 0
    lost_attempts: int = 0
    run_id: str | None = None
    run_name: str | None = None
    step: str | None = None
    """The ZenML step the run was last seen in (while running), or the last one seen (once ended)."""
    metrics: dict[str, JsonValue] | None = None
    error: ErrorInfo | None = None
    duplicate_of: str | None = None
    coalesced_into: str | None = None
    coalesced_from: list[str] = Field(default_factory=list)
    coalesced_count: int = 0
    cancelled: CancelInfo | None = None
    claimed_id: str | None = None
    replay_of: str | None = None
    replayed_as: list[str] = Field(default_factory=list)
    next_attempt_at: datetime | None = None
    worker: str | None = None
    created_at: datetime = Field(default_factory=utc_now)
    updated_at: datetime = Field(default_factory=utc_now)
    started_at: datetime | None = None
    finished_at: datetime | None = None

    @classmethod
    def queued(cls, request: TriggerRequest) -> RequestState:
        """The first state, written atomically with the enqueue."""
        return cls(
            request_id=request.request_id,
            status=Status.QUEUED,
            pipeline_name=request.pipeline_name,
            template=request.template,
            source=request.source,
            idempotency_key=request.idempotency_key,
            coalesce_key=request.coalesce_key,
            priority=request.priority,
            replay_of=request.replay_of,
            created_at=request.created_at,
        )

    def advance(self, status: Status, **changes: Any) -> RequestState:
        """A copy in the new status, stamped now."""
        now = utc_now()
        if status.terminal and "finished_at" not in changes:
            changes["finished_at"] = now
        return self.model_copy(update={"status": status, "updated_at": now, **changes})

    def to_json(self) -> str:
        """Stored form."""
        return self.model_dump_json()

    def public_dict(self) -> dict[str, Any]:
        """The JSON object `trigger status --json` prints."""
        return self.model_dump(mode="json")


class StateStore:
    """Reads and writes request states in Redis, each kept `ttl` seconds after its last change."""

    def __init__(self, client: redis.Redis, ttl: int) -> None:
        self.client = client
        self.ttl = ttl

    def get(self, request_id: str) -> RequestState | None:
        """The state, or None if unknown or expired."""
        return parse_state(self.client.get(keys.state_key(request_id)))

    def require(self, request_id: str) -> RequestState:
        """The state, or `UnknownRequest`."""
        return known_state(request_id, self.get(request_id))

    def put(self, state: RequestState, pipe: Any = None) -> None:
        """Write `state` (through `pipe` when batching with other commands)."""
        target = pipe if pipe is not None else self.client
        target.set(keys.state_key(state.request_id), state.to_json(), ex=self.ttl)

    def wait(self, request_id: str, timeout: float, poll: float = POLL_INTERVAL) -> RequestState:
        """Block up to `timeout` seconds for a terminal state; return the latest state either way."""
        deadline = time.monotonic() + timeout
        state = self.require(request_id)
        while not state.status.terminal and (pause := pause_before(deadline, poll)) > 0:
            time.sleep(pause)
            state = self.require(request_id)
        return state


def parse_state(raw: bytes | str | None) -> RequestState | None:
    """A stored state as read from Redis (by the sync or the async client), or None if there is none."""
    return RequestState.model_validate_json(raw) if raw else None


def known_state(request_id: str, state: RequestState | None) -> RequestState:
    """`state`, or the `UnknownRequest` both clients raise for an id nothing is recorded under."""
    if state is None:
        raise UnknownRequest(f"no request with id {request_id!r} is known (never sent, or expired)")
    return state


def pause_before(deadline: float, poll: float) -> float:
    """How long a waiter sleeps before its next look: `poll`, cut at the deadline (0: stop waiting)."""
    return min(poll, max(0.0, deadline - time.monotonic()))
