"""`TriggerClient`: enqueue trigger requests in one Redis round trip and read their state."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from typing import Any, NamedTuple

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry
from redis.sentinel import Sentinel

from producers import keys
from producers.cancel import CANCEL_SCRIPT, CANCEL_TRIES, cancel_call, cancelled, kept_changing, stop_run, who_cancels
from producers.catalog import CatalogCheck, CatalogReader
from producers.catalog_validation import check_request
from producers.contract import TriggerRequest, build_request, check_payload_size, encode_request
from producers.delayed import SCHEDULE_ENVELOPE, due_at, first_state
from producers.envelope import task_envelope
from producers.errors import EnqueueError, EnqueueNotReplicated, InvalidRequest, Problem
from producers.priority import queue_list
from producers.request_index import DEFAULT_LIMIT, INDEX_REQUEST, RequestQuery, list_requests
from producers.run_stop import RunStopper, ZenMLRunStopper
from producers.settings import ProducerSettings, redacted_url
from producers.signing import sign
from producers.state import RequestState, StateStore, Status, known_state, parse_state

log = logging.getLogger("producers.client")

# State and message in one atomic round trip; a Lua call is ~1.5x a bare LPUSH, MULTI/EXEC ~2.3x.
# NX: re-sending a request id (a producer retrying after a timeout) never resets its recorded
# state; the worker sees the earlier outcome and the copy starts nothing.
ENQUEUE_SCRIPT = (
    INDEX_REQUEST
    + SCHEDULE_ENVELOPE
    + """
if redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2], 'NX') then
  index_request(KEYS[8], ARGV[5], ARGV[2])
  redis.call('ZADD', KEYS[3], ARGV[4], ARGV[5])
  redis.call('HSET', KEYS[4], ARGV[5], ARGV[3])
  if ARGV[6] ~= '' then redis.call('SET', KEYS[5], ARGV[5], 'EX', ARGV[2]) end
end
if ARGV[7] == '' then
  redis.call('LPUSH', KEYS[2], ARGV[3])
else
  schedule_envelope(KEYS[6], KEYS[7], ARGV[3], ARGV[7], ARGV[2])
end
return 1
"""
)
# A new request is also noted as waiting (with its message) until a worker takes it on, so the
# worker's sweeper can send again a message that was popped and lost before kombu recorded it. A request
# with a coalescing key becomes the key's latest, decided here, atomically, in enqueue order (not by clocks).
# The message goes onto its priority's list (KEYS[2]), or, for a `scheduled` request, into the retry
# schedule (KEYS[6]) at its due time (ARGV[7]), which also scores it in the waiting index: the sweeper
# looks for a lost message only once it is due; the request's envelope set (KEYS[7]) lists it for a cancel.
# And it enters the time index `trigger requests list` walks (see producers.request_index).


class EnqueueCall(NamedTuple):
    """The enqueue script's KEYS and ARGV for one request, built in one place for the sync and async clients."""

    keys: list[str]
    args: list[Any]


def enqueue_call(
    settings: ProducerSettings, state: RequestState, payload: str, task_kwargs: dict[str, Any] | None = None
) -> EnqueueCall:
    """What `ENQUEUE_SCRIPT` needs to record `state`, note it as waiting and push `payload`'s task message.

    With a key configured, the message carries the signature of `payload`, the exact text enqueued.
    """
    queue = settings.queue
    coalesce_key = state.coalesce_key or ""
    now = time.time()
    due = state.next_attempt_at.timestamp() if state.status is Status.SCHEDULED and state.next_attempt_at else None
    kwargs = signed(settings, payload, task_kwargs, now)
    envelope = task_envelope(keys.TASK_NAME, state.request_id, [payload], queue, kwargs, state.priority)
    return EnqueueCall(
        keys=[
            keys.state_key(state.request_id),
            queue_list(queue, state.priority),
            keys.waiting_key(queue),
            keys.waiting_messages_key(queue),
            keys.coalesce_latest_key(coalesce_key),
            keys.retry_schedule_key(queue),
            keys.scheduled_envelopes_key(queue, state.request_id),
            keys.REQUESTS_INDEX_KEY,
        ],
        args=[state.to_json(), settings.state_ttl, envelope, due or now, state.request_id, coalesce_key, due or ""],
    )


def signed(
    settings: ProducerSettings, payload: str, task_kwargs: dict[str, Any] | None, now: float
) -> dict[str, Any] | None:
    """`task_kwargs` plus the `signature` keyword when the settings name a key (both clients sign here);
    a message signed already (the gateway signs with its caller's key) keeps its signature."""
    key = settings.signing_key()
    if key is None or "signature" in (task_kwargs or {}):
        return task_kwargs
    return {**(task_kwargs or {}), "signature": sign(payload, *key, timestamp=int(now))}


def queued(request: TriggerRequest, settings: ProducerSettings) -> tuple[RequestState, str]:
    """A request's first state (`queued`, or `scheduled` for a future `not_before`) and its checked wire
    form: what both clients enqueue for `send`."""
    payload = encode_request(request)
    check_payload_size(payload, settings.max_payload_bytes)
    return first_state(request, due_at(request, settings.state_ttl)), payload


def request_from(
    pipeline_name: str | None = None,
    *,
    template: str | None = None,
    parameters: Mapping[str, Any] | None = None,
    steps: Mapping[str, Any] | None = None,
    idempotency_key: str | None = None,
    coalesce_key: str | None = None,
    source: str = "python-client",
    metadata: Mapping[str, Any] | None = None,
    request_id: str | None = None,
    priority: int | None = None,
    not_before: datetime | None = None,
) -> TriggerRequest:
    """The request `trigger()` sends (either client); `InvalidRequest` with paths when it cannot be built."""
    fields: dict[str, Any] = {
        "pipeline_name": pipeline_name,
        "template": template,
        "parameters": dict(parameters or {}),
        "steps": steps,
        "idempotency_key": idempotency_key,
        "coalesce_key": coalesce_key,
        "source": source,
        "metadata": dict(metadata or {}),
        "priority": priority,
        "not_before": not_before,
    }
    if request_id is not None:
        fields["request_id"] = request_id
    return build_request(**fields)


def enqueue_error(settings: ProducerSettings, request_id: str, exc: Exception) -> EnqueueError:
    """The one-line error both clients raise when Redis does not take a request (no secret in it)."""
    where = redacted_url(settings.redis_url)
    return EnqueueError(
        f"could not enqueue request {request_id} onto {where} within {settings.enqueue_timeout:g}s: "
        f"{type(exc).__name__}: {exc}"
    )


def replica_wait(settings: ProducerSettings) -> tuple[int, int]:
    """`WAIT`'s arguments: the replicas to wait for, and half the enqueue timeout in ms (never 0, which
    blocks), so Redis answers with the count before the socket timeout could cut it off."""
    return settings.enqueue_min_replicas, max(1, int(settings.enqueue_timeout * 500))


def check_replicated(settings: ProducerSettings, request_id: str, acknowledged: int) -> None:
    """`EnqueueNotReplicated` when fewer replicas than required acknowledged the enqueue."""
    required, timeout_ms = replica_wait(settings)
    if acknowledged < required:
        raise EnqueueNotReplicated(
            f"request {request_id} is on the primary at {redacted_url(settings.redis_url)}, but only "
            f"{acknowledged} of the {required} replicas required (TRIGGER_ENQUEUE_MIN_REPLICAS) acknowledged it "
            f"within {timeout_ms} ms, so a failover could lose it; sending it again with the same request id is safe"
        )


def note_failed_enqueue(request: object, exc: BaseException) -> None:
    """Log a fire-and-forget failure under its stable event name, whatever `request` turned out to be."""
    log.error("trigger.enqueue_failed request_id=%s error=%s", _id_of(request), exc)


def timeouts(settings: ProducerSettings) -> dict[str, float]:
    """The socket timeouts of every connection a producer opens, to the primary and to the sentinels alike."""
    return {"socket_timeout": settings.enqueue_timeout, "socket_connect_timeout": settings.connect_timeout}


def connect(settings: ProducerSettings) -> redis.Redis:
    """A Redis client whose every call is bounded by the settings' timeouts (no silent retries).

    With a sentinel URL it is a client of the current primary: each new connection asks the sentinels
    (bounded by the same timeouts) where it is, so after a failover the next call reaches the new one.
    """
    options = {**timeouts(settings), "retry": Retry(NoBackoff(), 0)}
    address = settings.sentinel()
    if address is None:
        return redis.Redis.from_url(settings.redis_url, **options)
    sentinel = Sentinel(address.sentinels, sentinel_kwargs=options, **options)
    return sentinel.master_for(address.master_name, **address.master_options())


class TriggerClient:
    """Sends trigger requests to the worker's queue and reads their state back."""

    def __init__(self, client: redis.Redis, settings: ProducerSettings | None = None) -> None:
        self.settings = settings or ProducerSettings()
        self.redis = client
        self.states = StateStore(client, self.settings.state_ttl)
        self.failed_enqueues = 0
        self.catalog = CatalogReader(client, self.settings.queue)
        self._enqueue = client.register_script(ENQUEUE_SCRIPT)
        self._cancel = client.register_script(CANCEL_SCRIPT)

    @classmethod
    def from_env(cls) -> TriggerClient:
        """A client configured from `TRIGGER_*` variables (`TRIGGER_REDIS_URL` above all)."""
        return cls.from_settings(ProducerSettings())

    @classmethod
    def from_settings(cls, settings: ProducerSettings) -> TriggerClient:
        """A client for explicit settings."""
        return cls(connect(settings), settings)

    def trigger(
        self,
        pipeline_name: str | None = None,
        *,
        template: str | None = None,
        parameters: Mapping[str, Any] | None = None,
        steps: Mapping[str, Any] | None = None,
        idempotency_key: str | None = None,
        coalesce_key: str | None = None,
        source: str = "python-client",
        metadata: Mapping[str, Any] | None = None,
        request_id: str | None = None,
        priority: int | None = None,
        not_before: datetime | None = None,
    ) -> str:
        """Enqueue a run of `pipeline_name` (or of `template`) and return the request id.

        `priority` 0-9, higher first (None: routine, 0); `not_before`, an aware datetime, holds the run
        until then (recorded `scheduled`).

        Raises only `TriggerError`s: `InvalidRequest` (with paths) for a request that cannot be
        built, `EnqueueError` when Redis does not take it in time.
        """
        return self.send(
            request_from(
                pipeline_name,
                template=template,
                parameters=parameters,
                steps=steps,
                idempotency_key=idempotency_key,
                coalesce_key=coalesce_key,
                source=source,
                metadata=metadata,
                request_id=request_id,
                priority=priority,
                not_before=not_before,
            )
        )

    def validate(
        self,
        pipeline_name: str | None = None,
        *,
        template: str | None = None,
        parameters: Mapping[str, Any] | None = None,
        steps: Mapping[str, Any] | None = None,
        idempotency_key: str | None = None,
        coalesce_key: str | None = None,
        source: str = "python-client",
        metadata: Mapping[str, Any] | None = None,
        request_id: str | None = None,
        priority: int | None = None,
        not_before: datetime | None = None,
    ) -> list[Problem]:
        """Every problem `trigger(...)` with these arguments would be rejected for, found before enqueueing.

        Checked against the catalog the workers publish, with the worker's paths; nothing is
        enqueued. Without a usable catalog only the request's own shape is checked (and a log
        line says why). The worker validates again either way.
        """
        try:
            request = request_from(
                pipeline_name,
                template=template,
                parameters=parameters,
                steps=steps,
                idempotency_key=idempotency_key,
                coalesce_key=coalesce_key,
                source=source,
                metadata=metadata,
                request_id=request_id,
                priority=priority,
                not_before=not_before,
            )
            check_payload_size(encode_request(request), self.settings.max_payload_bytes)
        except InvalidRequest as exc:
            return exc.details
        return self.check(request).problems

    def check(self, request: TriggerRequest) -> CatalogCheck:
        """The early check of a built request against the catalog: its problems, or why it was skipped."""
        result = check_request(self.catalog.read(), request)
        if result.skipped:
            log.info("trigger.catalog_skipped request_id=%s reason=%s", request.request_id, result.skipped)
        return result

    def send(self, request: TriggerRequest) -> str:
        """Enqueue a built request; raise `EnqueueError` if Redis does not take it in time."""
        return self.enqueue(*queued(request, self.settings))

    def enqueue(self, state: RequestState, payload: str, task_kwargs: dict[str, Any] | None = None) -> str:
        """Record `state` (unless one exists) and push `payload` for the worker, in one atomic call; with
        `enqueue_min_replicas`, return only once that many replicas have it (`EnqueueNotReplicated` if not)."""
        call = enqueue_call(self.settings, state, payload, task_kwargs)
        try:
            self._enqueue(keys=call.keys, args=call.args)
            if self.settings.enqueue_min_replicas:
                check_replicated(self.settings, state.request_id, self.redis.wait(*replica_wait(self.settings)))
        except redis.RedisError as exc:
            raise enqueue_error(self.settings, state.request_id, exc) from None
        return state.request_id

    def try_send(self, request: TriggerRequest) -> str | None:
        """Fire-and-forget: like `send`, but logs and counts a failure instead of raising, whatever it is."""
        try:
            return self.send(request)
        except Exception as exc:  # noqa: BLE001 - the caller asked never to be raised at
            self.failed_enqueues += 1
            note_failed_enqueue(request, exc)
            return None

    def status(self, request_id: str) -> RequestState:
        """The request's current state; `UnknownRequest` if none is recorded."""
        return self.states.require(request_id)

    def wait(self, request_id: str, timeout: float) -> RequestState:
        """Block up to `timeout` seconds for the request to reach a terminal state."""
        return self.states.wait(request_id, timeout)

    def cancel(
        self, request_id: str, reason: str | None = None, by: str | None = None, *, stopper: RunStopper | None = None
    ) -> RequestState:
        """End a request that has not started `cancelled` (by `by`, default user@host) and return that state.

        A running request is cancelled only once ZenML agreed to stop its run (`stopper`, default
        `ZenMLRunStopper`); otherwise, and for a request that ended, `NotCancellable` says why.
        `UnknownRequest` for an id nothing is recorded under. See `producers.cancel`.
        """
        who, run_stop = by or who_cancels(), None
        for _ in range(CANCEL_TRIES):
            read = self.redis.get(keys.state_key(request_id))
            state = known_state(request_id, parse_state(read))
            if state.status.terminal and run_stop is not None:
                return state  # the stopped run ended the request first
            if state.status is Status.RUNNING and run_stop is None:
                run_stop = stop_run(stopper or ZenMLRunStopper(), state)
            ended = cancelled(state, who, reason, run_stop)
            catalog = self.catalog.read().catalog
            call = cancel_call(self.settings, read or b"", ended, catalog.names() if catalog else ())
            if self._cancel(keys=call.keys, args=call.args) in (b"ok", "ok"):
                return ended
        raise kept_changing(request_id)

    def requests(
        self,
        *,
        status: Iterable[str | Status] = (),
        pipeline: str | None = None,
        source: str | None = None,
        since: datetime | timedelta | None = None,
        limit: int = DEFAULT_LIMIT,
    ) -> list[RequestState]:
        """Recorded requests, newest first: any of `status`, of `pipeline` (name or template), from `source`,
        created since a time or within a duration, at most `limit`; `ValueError` for a bad filter."""
        return list_requests(self.redis, RequestQuery.build(status, pipeline, source, since, limit))


def _id_of(request: object) -> str | None:
    """The request id for a log line, whatever `request` turns out to be."""
    try:
        return str(request.request_id)  # type: ignore[attr-defined]
    except Exception:  # noqa: BLE001 - logging must not raise either
        return None
