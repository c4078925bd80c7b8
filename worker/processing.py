"""The trigger path as plain functions: decode -> deduplicate -> resolve -> validate -> run -> record.

Nothing here knows Celery; the task is a thin adapter over `Processor.handle`, so the
whole path is callable and testable on its own.
"""

from __future__ import annotations

import socket
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import redis
import structlog

from pipelines.registry import PipelineRegistry, RegisteredPipeline
from producers import keys
from producers.contract import (
    TriggerRequest,
    check_payload_size,
    decode_request,
    encode_request,
    peek_request_id,
)
from producers.envelope import raw_from_text, task_envelope
from producers.errors import (
    InvalidRequest,
    MalformedRequest,
    PermanentError,
    Problem,
    TransientError,
    TriggerError,
)
from producers.state import ErrorInfo, RequestState, StateStore, Status
from worker.dead_letters import DeadLetter, DeadLetterStore
from worker.errors import (
    InvalidParameters,
    LockedOverride,
    PipelineRunFailed,
    StoreUnavailable,
    UnknownPipeline,
    UnknownTemplate,
)
from worker.idempotency import IdempotencyClaims
from worker.lease import Leases
from worker.logs import get_logger
from worker.retry import RetryPolicy
from worker.runner import RunOutcome, ZenMLRunner, transient_types
from worker.schedule import RetrySchedule
from worker.server_backend import ServerBackend
from worker.settings import WorkerSettings
from worker.signature import PipelineSignature, inspect_pipeline
from worker.templates import Template, TemplateStore, locked_problems, merged
from worker.validation import RunPlan, plan_run

HOST = socket.gethostname()


class InternalError(PermanentError):
    """The worker hit an unexpected error; the request is dead-lettered for replay."""


@dataclass(frozen=True)
class Delivery:
    """One message as the task received it."""

    raw: bytes | str
    task_id: str | None = None
    delivery_tag: str | None = None
    attempt: int | None = None
    quarantine: str | None = None
    raw_encoding: str = "utf-8"

    def payload(self) -> bytes | str:
        """The original bytes (undoing the transport's base64 for non-UTF-8 garbage)."""
        return raw_from_text(self.raw, self.raw_encoding) if isinstance(self.raw, str) else self.raw


@dataclass(frozen=True)
class Target:
    """What a request resolved to: a registered pipeline, a validated plan, maybe a template."""

    entry: RegisteredPipeline
    plan: RunPlan
    template: Template | None = None


@dataclass
class Services:
    """Everything the processor talks to, built once per worker process."""

    settings: WorkerSettings
    registry: PipelineRegistry
    states: StateStore
    dead_letters: DeadLetterStore
    claims: IdempotencyClaims
    leases: Leases
    schedule: RetrySchedule
    runner: ZenMLRunner
    templates: TemplateStore
    server: ServerBackend


class Processor:
    """Takes one delivery to exactly one recorded outcome; never raises for a bad message."""

    def __init__(self, services: Services) -> None:
        self.s = services
        self.log = get_logger()
        self._signatures: dict[str, PipelineSignature] = {}

    def handle(self, delivery: Delivery) -> RequestState:
        """Process a delivery and return the state it ends in (or the state that made it a no-op)."""
        try:
            request = self._decode(delivery)
        except InvalidRequest as exc:
            return self._reject_undecodable(delivery, exc)
        with structlog.contextvars.bound_contextvars(
            request_id=request.request_id, pipeline=request.target, source=request.source
        ):
            return self._handle_request(request, delivery)

    def signature(self, entry: RegisteredPipeline) -> PipelineSignature:
        """The pipeline's signature, compiled once per process."""
        if entry.name not in self._signatures:
            self._signatures[entry.name] = inspect_pipeline(entry.pipeline)
        return self._signatures[entry.name]

    # -- decoding -----------------------------------------------------------

    def _decode(self, delivery: Delivery) -> TriggerRequest:
        payload = delivery.payload()
        if delivery.quarantine:
            raise MalformedRequest(raw=payload, details=[Problem("", delivery.quarantine)])
        check_payload_size(payload, self.s.settings.max_payload_bytes)
        return decode_request(payload)

    def _reject_undecodable(self, delivery: Delivery, exc: InvalidRequest) -> RequestState:
        payload = delivery.payload()
        request_id, state = self._undecodable_state(delivery, payload)
        with structlog.contextvars.bound_contextvars(request_id=request_id):
            if state is not None and state.status.terminal:
                self.log.info("trigger.skipped", reason="already finished", status=state.status.value)
                return state
            self.log.info("trigger.received", attempt=1)
            state = state or RequestState(request_id=request_id, status=Status.QUEUED, source="unknown")
            return self._end(state, Status.REJECTED, exc, attempt=1, raw=payload)

    def _undecodable_state(self, delivery: Delivery, payload: bytes | str) -> tuple[str, RequestState | None]:
        """The id to record an unreadable message under (the producer's, else one the payload names),
        with the state already recorded under it, read once."""
        if delivery.task_id:
            state = self.s.states.get(delivery.task_id)
            if state is not None:
                return delivery.task_id, state
        request_id = peek_request_id(payload) or delivery.task_id or f"malformed-{uuid.uuid4().hex}"
        return request_id, self.s.states.get(request_id)

    # -- the request path --------------------------------------------------

    def _handle_request(self, request: TriggerRequest, delivery: Delivery) -> RequestState:
        state = self.s.states.get(request.request_id) or RequestState.queued(request)
        attempt = state.attempts + 1
        self.log.info("trigger.received", attempt=attempt, replay_of=request.replay_of)
        reason = self._skip_reason(state, delivery)
        if reason is not None:
            return self._skip(state, reason)
        return self._process(request, state, attempt, delivery)

    def _skip_reason(self, state: RequestState, delivery: Delivery) -> str | None:
        if state.status.terminal:
            return "already finished"
        if state.status is Status.RETRYING and (delivery.attempt or 0) <= state.attempts:
            return "stale copy; its retry is scheduled"
        return None

    def _defer(self, request: TriggerRequest, state: RequestState, delivery: Delivery) -> RequestState:
        """Another worker holds the lease: look again once it would have expired, never just drop the copy.

        If the holder finishes, the copy then finds a terminal state; if it died (a killed prefork
        child is requeued at once, long before its lease runs out), the copy runs the request.
        """
        delay = self.s.leases.remaining(request.request_id) + 1.0
        kwargs = {"attempt": delivery.attempt} if delivery.attempt is not None else {}
        self._schedule(request, time.time() + delay, kwargs)
        self.log.info("trigger.deferred", reason="another worker holds its lease", delay_s=round(delay, 1))
        return state

    def _schedule(
        self, request: TriggerRequest, due: float, kwargs: dict[str, Any], pipe: redis.client.Pipeline | None = None
    ) -> None:
        """Put the request back on the queue at `due` (epoch seconds), through the retry schedule."""
        envelope = task_envelope(
            keys.TASK_NAME, request.request_id, [encode_request(request)], self.s.settings.queue, kwargs
        )
        self.s.schedule.add(envelope, due, pipe)

    def _skip(self, state: RequestState, reason: str) -> RequestState:
        self.log.info("trigger.skipped", reason=reason, status=state.status.value)
        return state

    def _process(self, request: TriggerRequest, state: RequestState, attempt: int, delivery: Delivery) -> RequestState:
        """Validate and claim the idempotency key (no lease needed), then run and record under a lease."""
        try:
            target = self._resolve(request)
            owner = self._claim(request)
            if owner != request.request_id:
                return self._duplicate(state, owner, attempt)
            if not self.s.leases.acquire(request.request_id):
                return self._defer(request, state, delivery)
            with self.s.leases.held(request.request_id, delivery.delivery_tag):
                state = self.s.states.get(request.request_id) or state  # another worker may have finished it
                if state.status.terminal:
                    return self._skip(state, "already finished")
                attempt = state.attempts + 1
                earlier = self._earlier_outcome(target, state)
                if earlier is not None:
                    return self._record_outcome(state, earlier, attempt - 1)
                state = self._start(request, state, target, attempt)
                return self._record_outcome(state, self._execute(target, state), attempt)
        except InvalidRequest as exc:
            return self._end(state, Status.REJECTED, exc, attempt, request=request)
        except PipelineRunFailed as exc:
            return self._end(state, Status.FAILED, exc, attempt, request=request, run_id=exc.run_id)
        except TransientError as exc:
            return self._retry_or_give_up(request, state, exc, attempt)
        except redis.RedisError:
            raise  # the task requeues the message; recording a wrong outcome would be worse
        except Exception as exc:  # a bug must dead-letter the request, not lose it
            self.log.exception("trigger.internal_error")
            error = InternalError(f"{type(exc).__name__}: {exc}")
            return self._end(state, Status.DEAD_LETTERED, error, attempt, request=request)

    def _resolve(self, request: TriggerRequest) -> Target:
        if request.template is not None:
            return self._resolve_template(request)
        entry = self.s.registry.get(request.pipeline_name or "")
        if entry is None:
            known = ", ".join(self.s.registry.names()) or "none"
            problem = f"pipeline {request.pipeline_name!r} is not registered; registered: {known}"
            raise UnknownPipeline(details=[Problem("pipeline_name", problem)])
        return Target(entry, plan_run(self.signature(entry), dict(request.parameters), request.step_parameters()))

    def _resolve_template(self, request: TriggerRequest) -> Target:
        """Find the snapshot, check its pipeline is registered, lock, merge and validate."""
        template = self._template(request.template or "")
        entry = self.s.registry.by_source(template.source)
        if entry is None:
            problem = f"template {template.ref} runs {template.source!r}, which this worker does not register"
            raise UnknownTemplate(details=[Problem("template", problem)])
        signature = self.signature(entry)
        parameters, steps = dict(request.parameters), request.step_parameters()
        locked = locked_problems(template, signature, parameters, steps)
        try:
            plan = plan_run(signature, *merged(template, signature, parameters, steps))
        except InvalidRequest as exc:
            raise (LockedOverride if locked else InvalidParameters)(details=locked + exc.details) from None
        if locked:
            raise LockedOverride(details=locked)
        return Target(entry, plan, template)

    def _template(self, ref: str) -> Template:
        try:
            return self.s.templates.get(ref)
        except TriggerError:
            raise
        except transient_types() as exc:
            raise StoreUnavailable(f"ZenML store unavailable while resolving template {ref}: {exc}") from exc

    def _execute(self, target: Target, started: RequestState) -> RunOutcome:
        """Run through the backend the ZenML connection calls for."""
        template, run_name = target.template, started.run_name or ""
        if template is None:
            return self.s.runner.run(target.entry, target.plan, run_name)
        if self.s.server.available(template):
            return self.s.server.run(
                template,
                target.plan.parameters,
                target.plan.steps,
                run_name,
                on_submitted=self._submitted_hook(started),
            )
        outcome = self.s.runner.run(target.entry, target.plan, run_name, template.run_config)
        self.s.runner.link(outcome, template.ref, template.snapshot_id)
        return outcome

    def _earlier_outcome(self, target: Target, state: RequestState) -> RunOutcome | None:
        """The outcome of an earlier attempt's run: finished after all, or still going on a server."""
        if target.template is not None and state.run_id and state.status in (Status.RUNNING, Status.RETRYING):
            if self.s.server.available(target.template):
                self.log.info("trigger.following", run_id=state.run_id)
                return self.s.server.follow(state.run_id, state.run_name or "", target.template.ref)
        if state.status is not Status.RUNNING or not state.run_name:
            return None
        outcome = self.s.runner.find(state.run_name, target.entry)
        if outcome is not None and outcome.status in ("completed", "failed"):
            self.log.info("trigger.recovered", run_id=outcome.run_id, run_status=outcome.status)
            return outcome
        return None

    def _claim(self, request: TriggerRequest) -> str:
        if request.idempotency_key is None:
            return request.request_id
        return self.s.claims.claim(request.idempotency_key, request.request_id)

    def _duplicate(self, state: RequestState, owner: str, attempt: int) -> RequestState:
        state = state.advance(Status.DUPLICATE, duplicate_of=owner, attempts=attempt, worker=HOST)
        self.s.states.put(state)
        self.log.info("trigger.duplicate", duplicate_of=owner)
        return state

    def _submitted_hook(self, started: RequestState) -> Callable[[str], None]:
        """Record the server's run id at once, so no later attempt submits the run again."""

        def record(run_id: str) -> None:
            self.s.states.put(started.model_copy(update={"run_id": run_id, "updated_at": _now()}))

        return record

    def _start(self, request: TriggerRequest, state: RequestState, target: Target, attempt: int) -> RequestState:
        run_name = f"{target.entry.name}-{request.request_id}-{attempt}"
        plan = target.plan
        started = state.advance(
            Status.RUNNING,
            pipeline_name=target.entry.name,
            template_ref=target.template.ref if target.template else None,
            attempts=attempt,
            run_name=run_name,
            started_at=_now(),
            worker=HOST,
            error=None,
            next_attempt_at=None,
        )
        self.s.states.put(started)
        self.log.info(
            "trigger.started", attempt=attempt, run_name=run_name, parameters=plan.parameters, steps=plan.steps
        )
        return started

    # -- outcomes ------------------------------------------------------------

    def _record_outcome(self, state: RequestState, outcome: RunOutcome, attempt: int) -> RequestState:
        if outcome.status == "submitted":
            state = state.advance(Status.SUBMITTED, attempts=attempt, run_id=outcome.run_id, run_name=outcome.run_name)
            self.s.states.put(state)
            self.log.info("trigger.submitted", run_id=outcome.run_id)
            return state
        if not outcome.succeeded:
            error = PipelineRunFailed(f"run {outcome.run_name} ended {outcome.status}", run_id=outcome.run_id)
            return self._end(state, Status.FAILED, error, attempt, run_id=outcome.run_id)
        state = state.advance(
            Status.SUCCEEDED,
            attempts=max(attempt, 1),
            run_id=outcome.run_id,
            run_name=outcome.run_name,
            metrics=outcome.metrics,
            error=None,
            worker=HOST,
        )
        self.s.states.put(state)
        self.log.info("trigger.succeeded", run_id=outcome.run_id, metrics=outcome.metrics, duration_s=_duration(state))
        return state

    def _retry_or_give_up(
        self, request: TriggerRequest, state: RequestState, exc: TransientError, attempt: int
    ) -> RequestState:
        state = self.s.states.get(state.request_id) or state  # may now carry a submitted server run's id
        pipeline = state.pipeline_name or request.pipeline_name
        delay = RetryPolicy.for_pipeline(self.s.settings, pipeline).delay(exc, attempt)
        if delay is None:
            return self._end(state, Status.DEAD_LETTERED, exc, attempt, request=request)
        due = time.time() + delay
        state = state.advance(
            Status.RETRYING,
            attempts=attempt,
            error=ErrorInfo(**exc.as_dict()),
            next_attempt_at=datetime.fromtimestamp(due, timezone.utc),
        )
        pipe = self.s.states.client.pipeline(transaction=True)
        self.s.states.put(state, pipe)
        self._schedule(request, due, {"attempt": attempt + 1}, pipe)
        pipe.execute()
        self.log.warning("trigger.retrying", attempt=attempt, delay_s=round(delay, 3), error=exc.message)
        return state

    def _end(
        self,
        state: RequestState,
        status: Status,
        exc: Any,
        attempt: int,
        request: TriggerRequest | None = None,
        run_id: str | None = None,
        raw: bytes | str | None = None,
    ) -> RequestState:
        """Record a non-successful terminal state, dead-letter it, free its idempotency key."""
        state = state.advance(
            status,
            attempts=attempt,
            error=ErrorInfo(**exc.as_dict()),
            run_id=run_id or state.run_id,
            worker=HOST,
            next_attempt_at=None,
        )
        raw_payload = raw if raw is not None else (encode_request(request) if request else "")
        self.s.states.put(state)
        self.s.dead_letters.add(_letter(state, exc, raw_payload))
        if request is not None and request.idempotency_key and status is not Status.DUPLICATE:
            self.s.claims.release(request.idempotency_key, request.request_id)
        event = {Status.REJECTED: "trigger.rejected", Status.FAILED: "trigger.failed"}.get(
            status, "trigger.dead_lettered"
        )
        self.log.warning(
            event,
            error_type=type(exc).__name__,
            error=exc.message,
            details=state.error.details if state.error else [],
            attempt=attempt,
            run_id=state.run_id,
        )
        return state


def _letter(state: RequestState, exc: Any, raw: bytes | str) -> DeadLetter:
    text, encoding = DeadLetter.encode_raw(raw)
    return DeadLetter(
        request_id=state.request_id,
        status=state.status.value,
        reason=exc.message,
        error=ErrorInfo(**exc.as_dict()),
        attempts=state.attempts,
        raw_payload=text,
        raw_encoding=encoding,
        pipeline_name=state.pipeline_name,
        template=state.template,
        source=state.source,
        run_id=state.run_id,
        created_at=state.created_at,
    )


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _duration(state: RequestState) -> float | None:
    if state.started_at and state.finished_at:
        return round((state.finished_at - state.started_at).total_seconds(), 3)
    return None
