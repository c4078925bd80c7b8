"""The trigger path as plain functions: decode -> deduplicate -> resolve -> validate -> run -> record.

Nothing here knows Celery; the task is a thin adapter over `Processor.handle`, so the
whole path is callable and testable on its own.
"""

from __future__ import annotations

import hashlib
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
from worker.dead_letters import BoundedPayload, DeadLetter, DeadLetterStore, bounded_payload, cut_payload
from worker.deadline import deadline
from worker.errors import (
    InvalidParameters,
    LockedOverride,
    PipelineRunFailed,
    RunTimeout,
    StoreUnavailable,
    UnknownPipeline,
    UnknownTemplate,
    WorkerLost,
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
from worker.validation import RunPlan, plan_run, worker_context

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
    raw_size: int = 0
    raw_sha256: str = ""
    """Set by the transport when it kept only a prefix of an oversized item: the whole item's size and digest."""

    def payload(self) -> bytes | str:
        """The original bytes (undoing the transport's base64); text that is not valid base64 stays as it came."""
        if not isinstance(self.raw, str):
            return self.raw
        try:
            return raw_from_text(self.raw, self.raw_encoding)
        except ValueError:
            return self.raw

    def kept(self, store: DeadLetterStore) -> BoundedPayload:
        """What a dead letter keeps of the payload: whole within the store's bounds, else prefix, size, digest."""
        if self.raw_size:  # the transport already cut an oversized item down
            return cut_payload(self.payload(), self.raw_size, self.raw_sha256, store.payload_prefix)
        return bounded_payload(self.payload(), store.max_payload_bytes, store.payload_prefix)

    def problem(self) -> str | None:
        """Why the delivery cannot hold a request before it is even parsed, if it cannot."""
        if self.quarantine:
            return self.quarantine
        if self.raw_encoding == "base64" and isinstance(self.raw, str) and self.payload() is self.raw:
            return "task keyword raw_encoding says base64, but the request text is not valid base64"
        return None


@dataclass(frozen=True)
class Job:
    """A decoded request and the delivery that carried it (whose raw bytes any dead letter keeps)."""

    request: TriggerRequest
    delivery: Delivery


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
        """Process a delivery and return the state it ends in (or the state that made it a no-op).

        The one guard of "every delivery ends recorded": whatever raises between receipt and a
        recorded outcome, the delivery is recorded and its raw bytes dead-lettered. Only a Redis
        error escapes, and the task requeues the message for it.
        """
        try:
            return self._walk(delivery)
        except redis.RedisError:
            raise
        except Exception as exc:  # the guard: a bug must dead-letter the delivery, not lose it
            self.log.exception("trigger.internal_error", error_type=type(exc).__name__)
            error = InternalError(f"{type(exc).__name__}: {exc}")
            return self._record_unreadable(delivery, Status.DEAD_LETTERED, error, received=False)

    def _walk(self, delivery: Delivery) -> RequestState:
        try:
            request = self._decode(delivery)
        except InvalidRequest as exc:
            return self._record_unreadable(delivery, Status.REJECTED, exc)
        with structlog.contextvars.bound_contextvars(
            request_id=request.request_id, pipeline=request.target, source=request.source
        ):
            return self._handle_request(request, delivery)

    def record_killed(self, delivery: Delivery, seconds: float) -> RequestState | None:
        """The pool killed the child running `delivery` at the hard time limit: end its request `failed`.

        Runs in the worker's main process, after the child is gone; a request already ended is left alone.
        """
        request = self._decode(delivery)
        state = self.s.states.get(request.request_id)
        if state is None or state.status.terminal:
            return state
        reason = f"run {state.run_name} ran past its hard time limit of {seconds:g}s; the pool killed its process"
        run_id = self.s.runner.abandon(state.run_name, reason) if state.run_name else None
        state = state.model_copy(update={"run_id": run_id or state.run_id})
        with structlog.contextvars.bound_contextvars(request_id=request.request_id, pipeline=request.target):
            return self._end(state, Status.FAILED, RunTimeout(reason), max(state.attempts, 1), delivery)

    def signature(self, entry: RegisteredPipeline) -> PipelineSignature:
        """The pipeline's signature, compiled once per process."""
        if entry.name not in self._signatures:
            self._signatures[entry.name] = inspect_pipeline(entry.pipeline)
        return self._signatures[entry.name]

    # -- decoding -----------------------------------------------------------

    def _decode(self, delivery: Delivery) -> TriggerRequest:
        payload = delivery.payload()
        problem = delivery.problem()
        if problem:
            raise MalformedRequest(raw=payload, details=[Problem("", problem)])
        check_payload_size(payload, self.s.settings.max_payload_bytes)
        return decode_request(payload)

    def _record_unreadable(self, delivery: Delivery, status: Status, exc: Any, received: bool = True) -> RequestState:
        """Record a delivery that holds no usable request under an id of its own, with its raw bytes."""
        payload = delivery.payload()
        state = self._own_state(delivery, payload)
        with structlog.contextvars.bound_contextvars(request_id=state.request_id if state else delivery.task_id):
            if state is None:
                self.log.info("trigger.skipped", reason="a redelivery of a message already recorded")
                return self.s.states.get(delivery.task_id or "") or RequestState(
                    request_id=delivery.task_id or "", status=status
                )
            if received:
                self.log.info("trigger.received", attempt=1, claimed_id=state.claimed_id)
            return self._end(state, status, exc, max(state.attempts, 1), delivery)

    def _own_state(self, delivery: Delivery, payload: bytes | str) -> RequestState | None:
        """The state to record an unreadable delivery under, or None for a redelivery already recorded.

        That is the delivery's own task id while no outcome is recorded under it. Garbage naming a
        finished request's id never hides behind it: it gets a fresh id that records the claim.
        """
        claimed = peek_request_id(payload)
        task_id = delivery.task_id
        if task_id:
            state = self.s.states.get(task_id)
            if state is None or not state.status.terminal:
                fresh = RequestState(request_id=task_id, status=Status.QUEUED, source="unknown")
                return (state or fresh).model_copy(update={"claimed_id": claimed if claimed != task_id else None})
            if self._already_lettered(task_id, payload):
                return None
        own_id = f"malformed-{uuid.uuid4().hex}"
        return RequestState(request_id=own_id, status=Status.QUEUED, source="unknown", claimed_id=claimed or task_id)

    def _already_lettered(self, request_id: str, payload: bytes | str) -> bool:
        letter = self.s.dead_letters.get(request_id)
        return letter is not None and letter_holds(letter, payload)

    # -- the request path --------------------------------------------------

    def _handle_request(self, request: TriggerRequest, delivery: Delivery) -> RequestState:
        job = Job(request, delivery)
        state = self.s.states.get(request.request_id) or RequestState.queued(request)
        self.log.info("trigger.received", attempt=state.attempts + 1, replay_of=request.replay_of)
        reason = self._skip_reason(state, delivery)
        if reason is not None:
            return self._skip(state, reason)
        return self._process(job, state)

    def _skip_reason(self, state: RequestState, delivery: Delivery) -> str | None:
        if state.status.terminal:
            return "already finished"
        if state.status is Status.RETRYING and (delivery.attempt or 0) <= state.attempts:
            return "stale copy; its retry is scheduled"
        return None

    def _defer(self, job: Job, state: RequestState) -> RequestState:
        """Another worker holds the lease: look again once it would have expired, never just drop the copy.

        If the holder finishes, the copy then finds a terminal state; if it died (a killed prefork
        child is requeued at once, long before its lease runs out), the copy runs the request.
        """
        delay = self.s.leases.remaining(job.request.request_id) + 1.0
        attempt = job.delivery.attempt
        self._schedule(job.request, time.time() + delay, {"attempt": attempt} if attempt is not None else {})
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

    def _process(self, job: Job, state: RequestState) -> RequestState:
        """Validate and claim the idempotency key (no lease needed), then run and record under a lease."""
        try:
            target = self._resolve(job.request)
            owner = self._claim(job.request)
            if owner != job.request.request_id:
                return self._duplicate(state, owner)
            if not self.s.leases.acquire(job.request.request_id):
                return self._defer(job, state)
            with self.s.leases.held(job.request.request_id, job.delivery.delivery_tag):
                return self._run_leased(job, target)
        except InvalidRequest as exc:
            return self._end(state, Status.REJECTED, exc, state.attempts + 1, job.delivery)

    def _run_leased(self, job: Job, target: Target) -> RequestState:
        """Under the lease: re-read the state, settle an earlier attempt, then run this one."""
        state = self.s.states.get(job.request.request_id) or RequestState.queued(job.request)
        if state.status.terminal:
            return self._skip(state, "already finished")  # another worker finished it meanwhile
        try:
            settled = self._settle_earlier(job, target, state)
            if settled is not None:
                return settled
            state = self._start(job.request, state, target)
            return self._record_outcome(job, state, self._execute(target, state))
        except PipelineRunFailed as exc:
            state = state.model_copy(update={"run_id": exc.run_id or state.run_id})
            return self._end(state, Status.FAILED, exc, state.attempts, job.delivery)
        except TransientError as exc:
            return self._retry_or_give_up(job, state, exc)

    def _settle_earlier(self, job: Job, target: Target, state: RequestState) -> RequestState | None:
        """An attempt that found `running` was interrupted: reuse its finished run, or count it as lost.

        A lost attempt counts against the retry limit like a transient error, so a request that
        kills its worker every time ends `dead_lettered` (`WorkerLost`) instead of looping.
        """
        earlier = self._earlier_outcome(target, state)
        if earlier is not None:
            return self._record_outcome(job, state, earlier)
        return self._count_lost(job, state) if state.status is Status.RUNNING else None

    def _count_lost(self, job: Job, state: RequestState) -> RequestState:
        """Mark the dead attempt's ZenML run failed, then treat the attempt like a transient failure."""
        lost = state.lost_attempts + 1
        run_id = self.s.runner.abandon(state.run_name, "its worker died during the run") if state.run_name else None
        state = state.model_copy(update={"lost_attempts": lost, "run_id": run_id or state.run_id})
        plural = "attempt" if lost == 1 else "attempts"
        error = WorkerLost(f"{lost} {plural} died with their worker (last run {state.run_name})")
        self.log.warning("trigger.worker_lost", attempt=state.attempts, lost_attempts=lost, run_id=state.run_id)
        return self._retry_or_give_up(job, state, error)

    def _resolve(self, request: TriggerRequest) -> Target:
        if request.template is not None:
            return self._resolve_template(request)
        entry = self.s.registry.get(request.pipeline_name or "")
        if entry is None:
            known = ", ".join(self.s.registry.names()) or "none"
            problem = f"pipeline {request.pipeline_name!r} is not registered; registered: {known}"
            raise UnknownPipeline(details=[Problem("pipeline_name", problem)])
        parameters, steps = dict(request.parameters), request.step_parameters()
        return Target(entry, plan_run(self.signature(entry), parameters, steps, worker_context(self.s.settings)))

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
            plan = plan_run(signature, *merged(template, signature, parameters, steps), worker_context(self.s.settings))
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
        """Run within the target's time limit."""
        with deadline(self._time_limit(target), f"run {started.run_name}"):
            return self._run(target, started)

    def _time_limit(self, target: Target) -> float:
        """Seconds the run may take: `template:NAME`, then the pipeline, then the default."""
        limits, settings = self.s.settings.run_timeouts, self.s.settings
        if target.template is not None and f"template:{target.template.name}" in limits:
            return limits[f"template:{target.template.name}"]
        return limits.get(target.entry.name, settings.run_timeout)

    def _run(self, target: Target, started: RequestState) -> RunOutcome:
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

    def _duplicate(self, state: RequestState, owner: str) -> RequestState:
        state = state.advance(Status.DUPLICATE, duplicate_of=owner, attempts=state.attempts + 1, worker=HOST)
        self.s.states.put(state)
        self.log.info("trigger.duplicate", duplicate_of=owner)
        return state

    def _submitted_hook(self, started: RequestState) -> Callable[[str], None]:
        """Record the server's run id at once, so no later attempt submits the run again."""

        def record(run_id: str) -> None:
            self.s.states.put(started.model_copy(update={"run_id": run_id, "updated_at": _now()}))

        return record

    def _start(self, request: TriggerRequest, state: RequestState, target: Target) -> RequestState:
        attempt = state.attempts + 1
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

    def _record_outcome(self, job: Job, state: RequestState, outcome: RunOutcome) -> RequestState:
        """Record a run's outcome for the attempt `state` describes."""
        attempts = max(state.attempts, 1)
        if outcome.status == "submitted":
            state = state.advance(Status.SUBMITTED, attempts=attempts, run_id=outcome.run_id, run_name=outcome.run_name)
            self.s.states.put(state)
            self.log.info("trigger.submitted", run_id=outcome.run_id)
            return state
        if not outcome.succeeded:
            error = PipelineRunFailed(f"run {outcome.run_name} ended {outcome.status}", run_id=outcome.run_id)
            state = state.model_copy(update={"run_id": outcome.run_id})
            return self._end(state, Status.FAILED, error, state.attempts, job.delivery)
        state = state.advance(
            Status.SUCCEEDED,
            attempts=attempts,
            run_id=outcome.run_id,
            run_name=outcome.run_name,
            metrics=outcome.metrics,
            error=None,
            worker=HOST,
        )
        self.s.states.put(state)
        self.log.info("trigger.succeeded", run_id=outcome.run_id, metrics=outcome.metrics, duration_s=_duration(state))
        return state

    def _retry_or_give_up(self, job: Job, state: RequestState, exc: TransientError) -> RequestState:
        """Schedule the next attempt after the attempt `state` describes, or dead-letter past the limit."""
        fresh = self.s.states.get(state.request_id)  # may now carry a submitted server run's id
        if fresh is not None and fresh.run_id and not state.run_id:
            state = state.model_copy(update={"run_id": fresh.run_id})
        attempt = max(state.attempts, 1)
        pipeline = state.pipeline_name or job.request.pipeline_name
        delay = RetryPolicy.for_pipeline(self.s.settings, pipeline).delay(exc, attempt)
        if delay is None:
            return self._end(state, Status.DEAD_LETTERED, exc, attempt, job.delivery)
        due = time.time() + delay
        state = state.advance(
            Status.RETRYING,
            attempts=attempt,
            error=ErrorInfo(**exc.as_dict()),
            next_attempt_at=datetime.fromtimestamp(due, timezone.utc),
        )
        pipe = self.s.states.client.pipeline(transaction=True)
        self.s.states.put(state, pipe)
        self._schedule(job.request, due, {"attempt": attempt + 1}, pipe)
        pipe.execute()
        self.log.warning("trigger.retrying", attempt=attempt, delay_s=round(delay, 3), error=state.error.message)
        return state

    def _end(self, state: RequestState, status: Status, exc: Any, attempt: int, delivery: Delivery) -> RequestState:
        """Record a non-successful terminal state, dead-letter the delivery's raw bytes, free the idempotency key."""
        state = state.advance(
            status,
            attempts=max(attempt, 1),
            error=ErrorInfo(**exc.as_dict()),
            worker=HOST,
            next_attempt_at=None,
        )
        self.s.states.put(state)
        self.s.dead_letters.add(_letter(state, delivery.kept(self.s.dead_letters)))
        if state.idempotency_key and state.duplicate_of is None:
            self.s.claims.release(state.idempotency_key, state.request_id)
        event = {Status.REJECTED: "trigger.rejected", Status.FAILED: "trigger.failed"}.get(
            status, "trigger.dead_lettered"
        )
        error = state.error or ErrorInfo(type="", message="")
        self.log.warning(
            event,
            error_type=error.type,
            error=error.message,
            details=error.details,
            attempt=state.attempts,
            run_id=state.run_id,
        )
        return state


def _letter(state: RequestState, payload: BoundedPayload) -> DeadLetter:
    error = state.error or ErrorInfo(type="InternalError", message="no error recorded")
    return DeadLetter(
        request_id=state.request_id,
        status=state.status.value,
        reason=error.message,
        error=error,
        attempts=state.attempts,
        **payload.fields(),
        replay_of=state.replay_of,
        pipeline_name=state.pipeline_name,
        template=state.template,
        source=state.source,
        run_id=state.run_id,
        created_at=state.created_at,
    )


def letter_holds(letter: DeadLetter, payload: bytes | str) -> bool:
    """Whether `letter` already keeps exactly `payload` (a redelivery of a recorded message)."""
    data = payload.encode("utf-8", "surrogatepass") if isinstance(payload, str) else payload
    if letter.payload_sha256:
        return letter.payload_sha256 == hashlib.sha256(data).hexdigest()
    return letter.raw_bytes() == data  # a letter written before digests were kept


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _duration(state: RequestState) -> float | None:
    if state.started_at and state.finished_at:
        return round((state.finished_at - state.started_at).total_seconds(), 3)
    return None
