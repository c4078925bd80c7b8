"""The trigger path as plain functions: decode -> deduplicate -> resolve -> validate -> run -> record.

Nothing here knows Celery; the task is a thin adapter over `Processor.handle`, so the
whole path is callable and testable on its own.
"""

from __future__ import annotations

import socket
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from functools import partial
from typing import Any

import redis

from pipelines.registry import PipelineRegistry, RegisteredPipeline
from producers import keys
from producers.contract import (
    TriggerRequest,
    check_payload_size,
    decode_request,
    encode_request,
    peek_request_id,
)
from producers.envelope import task_envelope
from producers.errors import (
    InvalidRequest,
    MalformedRequest,
    PermanentError,
    Problem,
    TransientError,
    TriggerError,
)
from producers.state import NOT_STARTED, ErrorInfo, RequestState, StateStore, Status
from worker.admission import Admission, Coalescing
from worker.authorization import Authorization
from worker.dead_letters import BoundedPayload, DeadLetter, DeadLetterStore
from worker.deadline import deadline
from worker.delivery import Delivery, letter_holds
from worker.early import EarlyEnds
from worker.errors import (
    InvalidParameters,
    LockedOverride,
    PipelineRunFailed,
    RunTimeout,
    StoreUnavailable,
    UnknownPipeline,
    UnknownTemplate,
    WorkerLost,
    WorkerShutdown,
)
from worker.idempotency import IdempotencyClaims
from worker.lease import Leases
from worker.limits import ConcurrencyLimits
from worker.logs import bound_context, get_logger
from worker.outcomes import Observer, Outcomes, Refused, Step, Unobserved
from worker.retry import RetryPolicy
from worker.runner import Provenance, RunOutcome, ZenMLRunner, transient_types
from worker.schedule import RetrySchedule
from worker.server_backend import ServerBackend
from worker.settings import WorkerSettings
from worker.signature import PipelineSignature, inspect_pipeline
from worker.step_watch import Seen, StepWatch
from worker.templates import Template, TemplateStore, locked_problems, merged
from worker.validation import RunPlan, plan_run, worker_context

HOST = socket.gethostname()
RESOLVE_RETRY_S = 5.0
"""When resolving a request hits an unavailable store (a template lookup), look again this much later."""


class InternalError(PermanentError):
    """The worker hit an unexpected error; the request is dead-lettered for replay."""


class HandedOn(Exception):
    """A run the worker's shutdown cut off was handed on (`Processor._hand_on`); `state` is what was recorded."""

    def __init__(self, state: RequestState) -> None:
        super().__init__(state.request_id)
        self.state = state


@dataclass(frozen=True)
class Job:
    """A decoded request, the delivery that carried it (whose raw bytes any dead letter keeps), and the
    lease's fence (`Leases.fence`: holder and token) its writes are conditional on once the lease is held."""

    request: TriggerRequest
    delivery: Delivery
    fence: str | None = None


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
    stopping: Callable[[], bool] = field(default=lambda: False)
    """Whether this process is being stopped by a shutdown (see `worker.shutdown.stopping`)."""
    checkpoint: Callable[[str, str], None] = field(default=lambda point, request_id: None)
    """Called at each named step of the walk with the request id: where tests pause, crash or break Redis."""
    observer: Observer = field(default_factory=Unobserved)
    """Told of every recorded step (the worker's metrics, `worker.metrics`)."""


class Processor:
    """Takes one delivery to exactly one recorded outcome; never raises for a bad message."""

    def __init__(self, services: Services) -> None:
        self.s = services
        settings, observer, pipelines = services.settings, services.observer, services.registry.names()
        self.outcomes = Outcomes(services.states, services.dead_letters, services.schedule, observer, pipelines)
        poll = min(10.0, max(1.0, settings.lease_timeout / 6))
        client, fence = services.states.client, services.leases.fence
        self.coalescing = Coalescing(client, settings.lease_timeout, settings.state_ttl, poll, fence)
        limits = ConcurrencyLimits(client, settings.concurrency_limits, settings.queue, poll, pipelines)
        self.admissions: tuple[Admission, ...] = (self.coalescing, limits)
        self.early = EarlyEnds(services.states.client, settings.queue, settings.state_ttl, HOST, observer, pipelines)
        self.authorization = Authorization.from_settings(settings)
        self.steps = StepWatch(services.runner.running_step, services.states, self.outcomes, settings.step_interval)
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
        except Refused as refused:
            return self._refused(refused)
        except redis.RedisError:
            raise
        except Exception as exc:  # the guard: a bug must dead-letter the delivery, not lose it
            self.log.exception("trigger.internal_error", error_type=type(exc).__name__)
            error = InternalError(f"{type(exc).__name__}: {exc}")
            return self._record_unreadable(delivery, Status.DEAD_LETTERED, error, readable=self._readable(delivery))

    def _refused(self, refused: Refused) -> RequestState:
        """The protocol refused a write: the request ended meanwhile, or this worker lost its lease."""
        state = self.s.states.get(refused.request_id)
        event = "trigger.fenced" if refused.reason == "fenced" else "trigger.skipped"
        self.log.warning(event, reason=f"refused to record: {refused.reason}", request_id=refused.request_id)
        return state or RequestState(request_id=refused.request_id, status=Status.QUEUED)

    def _walk(self, delivery: Delivery) -> RequestState:
        try:
            request = self._decode(delivery)
        except InvalidRequest as exc:
            return self._record_unreadable(delivery, Status.REJECTED, exc)
        with bound_context(request_id=request.request_id, pipeline=request.target, source=request.source):
            try:
                self.authorization.check(request, delivery.raw, delivery.signature)
            except InvalidRequest as exc:
                return self._refuse(Job(request, delivery), exc)
            return self._handle_request(request, delivery)

    def end_on_arrival(self, task_id: str, raw: str, kwargs: dict[str, Any]) -> bool:
        """End a first delivery that is a plain duplicate or superseded request, without a task (see `EarlyEnds`).

        Called by the transport as the message arrives; False for anything else, which becomes a task
        as usual. Nothing here may be lost: the early end is one atomic write, and a failure before it
        leaves the message to be delivered.
        """
        if set(kwargs) - {"signature"}:  # a retry, a quarantined item or a cut payload: the task's business
            return False
        delivery = Delivery(raw=raw, task_id=task_id, signature=kwargs.get("signature"))
        try:
            request = self._decode(delivery)
        except InvalidRequest:
            return False
        if request.request_id != task_id or (request.idempotency_key is None and request.coalesce_key is None):
            return False
        if not self.authorization.permits(request, delivery.raw, delivery.signature):
            return False  # the task rejects it, with the reason
        ended = self.early.check(request).ended
        if ended is None:
            return False
        with bound_context(request_id=request.request_id, pipeline=request.target, source=request.source):
            self._ended_early(request, ended)
        return True

    def record_killed(self, delivery: Delivery, seconds: float, wait: float) -> RequestState | None:
        """The pool killed the child running `delivery` at the hard time limit: end its request `failed`.

        Runs in the worker's main process. Celery reports the timeout before the child is gone, so
        this first takes the request's lease (free once the child stops heartbeating, within `wait`
        seconds): a child that finished meanwhile has recorded its outcome, which is then kept.
        """
        request = self._decode(delivery)
        if not self._await_lease(request.request_id, wait):
            self.log.error("trigger.record_failed", request_id=request.request_id, reason="its lease stayed held")
            return None
        with self.s.leases.held(request.request_id, None):
            state = self.s.states.get(request.request_id)
            if state is None or state.status.terminal:
                return state
            reason = f"run {state.run_name} ran past its hard time limit of {seconds:g}s; the pool killed its process"
            run_id = self.s.runner.abandon(state.run_name, reason) if state.run_name else None
            state = state.model_copy(update={"run_id": run_id or state.run_id})
            with bound_context(request_id=request.request_id, pipeline=request.target):
                error, fence = RunTimeout(reason), self.s.leases.fence(request.request_id)
                return self._end(state, Status.FAILED, error, max(state.attempts, 1), delivery, fence)

    def _await_lease(self, request_id: str, wait: float) -> bool:
        deadline = time.monotonic() + wait
        while not self.s.leases.acquire(request_id):
            if time.monotonic() > deadline:
                return False
            time.sleep(0.5)
        return True

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

    def _record_unreadable(self, delivery: Delivery, status: Status, exc: Any, readable: bool = False) -> RequestState:
        """Record a delivery that holds no usable request under an id of its own, with its raw bytes."""
        state = self._own_state(delivery, readable)
        with bound_context(request_id=state.request_id if state else delivery.task_id):
            if state is None:
                self.log.info("trigger.skipped", reason="a redelivery of a message already recorded")
                return self.s.states.get(delivery.task_id or "") or RequestState(
                    request_id=delivery.task_id or "", status=status
                )
            if not readable:
                self.log.info("trigger.received", attempt=1, claimed_id=state.claimed_id)
            return self._end(state, status, exc, max(state.attempts, 1), delivery)

    def _own_state(self, delivery: Delivery, readable: bool) -> RequestState | None:
        """The state to record a delivery under, or None for a redelivery already recorded.

        That is the delivery's task id while nothing is recorded there, or only the `queued` record
        of an unreadable payload (a raw replay); a readable request (the guard caught a bug while it
        was handled) keeps its own record until that ends. Garbage never takes over another
        request's record, queued, running or finished: it gets a fresh id that records the claim.
        """
        claimed = peek_request_id(delivery.payload())
        task_id = delivery.task_id or ""
        state = self.s.states.get(task_id) if task_id else None
        if task_id and (state is None or _may_take(state, readable)):
            base = state or RequestState(request_id=task_id, status=Status.QUEUED, source="unknown")
            return base.model_copy(update={"claimed_id": claimed if claimed != task_id else None})
        if state is not None and state.status.terminal and self._already_lettered(task_id, delivery):
            return None
        replay_of = state.replay_of if state is not None else None
        own_id = f"malformed-{uuid.uuid4().hex}"
        return RequestState(
            request_id=own_id,
            status=Status.QUEUED,
            source="unknown",
            claimed_id=claimed or task_id,
            replay_of=replay_of,
        )

    def _readable(self, delivery: Delivery) -> bool:
        """Whether the delivery holds a valid request under its own task id (so a crash is recorded there)."""
        try:
            return self._decode(delivery).request_id == delivery.task_id
        except Exception:  # noqa: BLE001 - anything unreadable is simply not readable
            return False

    def _already_lettered(self, request_id: str, delivery: Delivery) -> bool:
        letter = self.s.dead_letters.get(request_id)
        return letter is not None and letter_holds(letter, delivery)

    # -- the request path --------------------------------------------------

    def _handle_request(self, request: TriggerRequest, delivery: Delivery) -> RequestState:
        early = self.early.check(request)
        if early.ended is not None:
            return self._ended_early(request, early.ended)
        job, state = Job(request, delivery), early.stored or RequestState.queued(request)
        return self._received(job, state) or self._process(job, state)

    def _refuse(self, job: Job, exc: InvalidRequest) -> RequestState:
        """Reject a request its signature or key does not allow, under its lease like any invalid one.

        It ends no other request early, claims no key and starts nothing; a copy of a request
        that already ended (or whose retry is scheduled) is skipped, as any copy would be.
        """
        state = self.s.states.get(job.request.request_id) or RequestState.queued(job.request)
        return self._received(job, state) or self._leased(job, state, partial(self._reject, exc=exc))

    def _received(self, job: Job, state: RequestState) -> RequestState | None:
        """Log the arrival; the state to end on when this copy needs nothing (see `_skip_reason`), else None."""
        self.log.info("trigger.received", attempt=state.attempts + 1, replay_of=job.request.replay_of)
        reason = self._skip_reason(state, job.delivery)
        return self._skip(state, reason) if reason is not None else None

    def _ended_early(self, request: TriggerRequest, state: RequestState) -> RequestState:
        """Log the `duplicate` or `coalesced` end `EarlyEnds` recorded for a first delivery."""
        self.log.info("trigger.received", attempt=1, replay_of=request.replay_of)
        if state.status is Status.DUPLICATE:
            self.log.info("trigger.duplicate", duplicate_of=state.duplicate_of)
        else:
            reason = f"superseded by {state.coalesced_into}, a newer request for {request.coalesce_key!r}"
            self.log.info("trigger.coalesced", reason=reason)
        return state

    def _skip_reason(self, state: RequestState, delivery: Delivery) -> str | None:
        if state.status.terminal:
            return "already finished"
        if state.status is Status.RETRYING and (delivery.attempt or 0) <= state.attempts:
            return "stale copy; its retry is scheduled"
        return None

    def _defer(self, job: Job, state: RequestState, delay: float, reason: str) -> RequestState:
        """Look again in `delay` seconds, never just drop the copy.

        If the holder finishes, the copy then finds a terminal state; if it died (a killed prefork
        child is requeued at once, long before its lease runs out), the copy runs the request.
        """
        attempt = job.delivery.attempt
        self._schedule(job, time.time() + delay, {"attempt": attempt} if attempt is not None else {})
        self.log.info("trigger.deferred", reason=reason, delay_s=round(delay, 1))
        return state

    def _schedule(self, job: Job, due: float, kwargs: dict[str, Any]) -> None:
        """Put the request back on the queue at `due` (epoch seconds), through the retry schedule."""
        self.s.schedule.defer(self._envelope(job, kwargs), due, job.request.request_id)

    def _envelope(self, job: Job, kwargs: dict[str, Any]) -> str:
        """The task message that carries the job's request to this deployment's queue again.

        A signed request goes back as the exact text that arrived, with its signature, which
        covers that text: the copy verifies like the first delivery did.
        """
        delivery, text = job.delivery, encode_request(job.request)
        kept: dict[str, Any] = {}
        if delivery.signature is not None:
            text, kept = delivery.text(), {"signature": delivery.signature, "raw_encoding": delivery.raw_encoding}
        queue, priority = self.s.settings.queue, job.request.priority
        return task_envelope(keys.TASK_NAME, job.request.request_id, [text], queue, kwargs | kept, priority)

    def _skip(self, state: RequestState, reason: str) -> RequestState:
        self.log.info("trigger.skipped", reason=reason, status=state.status.value)
        return state

    def _process(self, job: Job, state: RequestState) -> RequestState:
        """Resolve and claim the idempotency key (a duplicate needs no lease), then decide and record under it."""
        try:
            target = self._resolve(job.request)
        except InvalidRequest as exc:
            return self._leased(job, state, partial(self._reject, exc=exc))
        except TransientError as exc:  # the store is away: look again later, the request is not at fault
            return self._defer(job, state, RESOLVE_RETRY_S, f"resolving it failed: {exc.message}")
        owner = self._claim(job.request)
        if owner != job.request.request_id:
            return self._duplicate(state, owner)
        return self._leased(job, state, lambda leased, fresh: self._run_leased(leased, target, fresh))

    def _leased(self, job: Job, state: RequestState, body: Callable[[Job, RequestState], RequestState]) -> RequestState:
        """Take the request's lease (or defer), re-read its state, and run `body` with every write fenced by it.

        A state that ended meanwhile is left as it is (its idempotency key freed again if it ended a
        failure, since this copy may just have claimed it); a holder still heard from is waited for.
        """
        request = job.request
        self.s.checkpoint("admitted", request.request_id)
        if not self.s.leases.acquire(request.request_id):
            return self._defer(job, state, self.s.leases.remaining(request.request_id) + 1.0, "its lease is held")
        held = self.s.leases.held(
            request.request_id, job.delivery.delivery_tag, request.idempotency_key, request.coalesce_key
        )
        with held:
            try:
                self.s.checkpoint("leased", request.request_id)
                fresh = self.s.states.get(request.request_id) or RequestState.queued(request)
                fence = self.s.leases.fence(request.request_id)
                if fresh.status.terminal:
                    return self._already_ended(fresh, fence)
                if fresh.status is Status.RUNNING and self.s.leases.holder_alive(request.request_id):
                    return self._defer(
                        job, fresh, self.s.settings.lease_timeout, "its earlier attempt's worker is alive"
                    )
                return body(replace(job, fence=fence), fresh)
            finally:
                for control in self.admissions:
                    control.release(request)

    def _already_ended(self, state: RequestState, fence: str | None) -> RequestState:
        """Another worker finished the request meanwhile, or it was cancelled; the key of a failure or a cancel stays
        free (this copy may have claimed it)."""
        freed = (Status.FAILED, Status.REJECTED, Status.DEAD_LETTERED, Status.CANCELLED)
        if state.idempotency_key and state.status in freed:
            self.s.claims.release(state.idempotency_key, state.request_id, fence)
        return self._skip(state, "already finished")

    def _reject(self, job: Job, state: RequestState, *, exc: InvalidRequest) -> RequestState:
        return self._end(state, Status.REJECTED, exc, state.attempts + 1, job.delivery, job.fence)

    def _run_leased(self, job: Job, target: Target, state: RequestState) -> RequestState:
        """Under the lease: settle an earlier attempt, ask the admission chain, then run this attempt
        (watching the ZenML step it is in; its state ends with the last step seen)."""
        seen = Seen()
        try:
            settled = self._settle_earlier(job, target, state) or self._admit(job, _resolved(state, target))
            if settled is not None:
                return settled
            state = self._start(job, state, target)
            with self.steps.watching(state, job.fence) as seen:
                outcome = self._execute(job, target, state)
            self.s.checkpoint("ran", job.request.request_id)
            return self._record_outcome(job, seen.stamp(state), outcome)
        except HandedOn as handed:
            return handed.state
        except PipelineRunFailed as exc:
            state = seen.stamp(state).model_copy(update={"run_id": exc.run_id or state.run_id})
            return self._end(state, Status.FAILED, exc, state.attempts, job.delivery, job.fence)
        except TransientError as exc:
            return self._retry_or_give_up(job, seen.stamp(state), exc)

    def _admit(self, job: Job, state: RequestState) -> RequestState | None:
        """Ask the admission chain; None when every control admits the run."""
        for control in self.admissions:
            verdict = control.decide(job.request, state)
            if verdict.kind == "defer":
                return self._defer(job, state, verdict.delay, verdict.reason)
            if verdict.kind == "end" and verdict.state is not None:
                self.outcomes.record(Step(verdict.state), job.fence)
                self.log.info(f"trigger.{verdict.state.status.value}", reason=verdict.reason)
                return verdict.state
        return None

    def _settle_earlier(self, job: Job, target: Target, state: RequestState) -> RequestState | None:
        """A copy that finds `running` settles the earlier attempt first: reuse its finished run, wait
        behind a holder that is still alive, or count the attempt as lost.

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

    def _execute(self, job: Job, target: Target, started: RequestState) -> RunOutcome:
        """Run within the target's time limit; a run cut off by a shutdown hands its request on first.

        The exception goes on if it is the process's own exit (a pool child's `SystemExit`); one raised
        in the run (ZenML's `RunInterruptedException` with `--pool solo`) becomes `HandedOn`. A run past
        its time limit is not handed on: the terminate signal is the pool's hard limit, and the main
        process records the request `failed` (`record_killed`).
        """
        limit, began = self._time_limit(target), time.monotonic()
        try:
            with deadline(limit, f"run {started.run_name}"):
                return self._run(job, target, started)
        except BaseException as exc:
            if not self.s.stopping() or time.monotonic() - began >= limit:
                raise
            handed = self._hand_on(job, started)
            if not isinstance(exc, Exception):
                raise
            raise HandedOn(handed) from exc

    def _hand_on(self, job: Job, started: RequestState) -> RequestState:
        """The worker stops mid-run: mark the run failed in ZenML and schedule the next attempt, as a retry.

        Recorded under the lease, before it is released, so the copy kombu puts back on the queue finds
        the request `retrying` and is skipped, and the next attempt does not wait for the lease timeout.
        Best effort: if Redis is away too, that copy finds the attempt `running` and counts it lost.
        """
        reason = f"the worker shut down during run {started.run_name}"
        try:
            run_id = self.s.runner.abandon(started.run_name, reason) if started.run_name else None
            state = started.model_copy(update={"run_id": run_id or started.run_id})
            self.log.warning("trigger.interrupted", attempt=state.attempts, run_id=state.run_id, reason=reason)
            return self._retry_or_give_up(job, state, WorkerShutdown(reason))
        except Exception as exc:  # noqa: BLE001 - the process is on its way out; the restored copy recovers it
            self.log.error("trigger.interrupt_unrecorded", error=f"{type(exc).__name__}: {exc}")
            return started

    def _time_limit(self, target: Target) -> float:
        """Seconds the run may take: `template:NAME`, then the pipeline, then the default."""
        limits, settings = self.s.settings.run_timeouts, self.s.settings
        if target.template is not None and f"template:{target.template.name}" in limits:
            return limits[f"template:{target.template.name}"]
        return limits.get(target.entry.name, settings.run_timeout)

    def _run(self, job: Job, target: Target, started: RequestState) -> RunOutcome:
        """Run through the backend the ZenML connection calls for."""
        template, run_name, why = target.template, started.run_name or "", provenance(job.request)
        if template is None:
            return self.s.runner.run(target.entry, target.plan, run_name, provenance=why)
        if self.s.server.available(template):
            return self.s.server.run(
                template,
                target.plan.parameters,
                target.plan.steps,
                run_name,
                on_submitted=self._submitted_hook(started, job.fence),
            )
        outcome = self.s.runner.run(target.entry, target.plan, run_name, template.run_config, provenance=why)
        self.s.runner.link(outcome, template.ref, template.snapshot_id)
        return outcome

    def _earlier_outcome(self, target: Target, state: RequestState) -> RunOutcome | None:
        """The outcome of an earlier attempt's run: finished after all, or still going on a server.

        A server run is found by its run name too, for when the server took it but recording its id
        did not happen (a Redis stall, a client timeout): it is followed, never submitted again.
        """
        server_run = target.template is not None and self.s.server.available(target.template)
        if server_run and state.status in (Status.RUNNING, Status.RETRYING) and target.template is not None:
            run_id = state.run_id or (self.s.runner.run_id(state.run_name) if state.run_name else None)
            if run_id:
                self.log.info("trigger.following", run_id=run_id)
                return self.s.server.follow(run_id, state.run_name or "", target.template.ref)
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
        self.outcomes.record(Step(state), holder=None)
        self.log.info("trigger.duplicate", duplicate_of=owner)
        return state

    def _submitted_hook(self, started: RequestState, fence: str | None) -> Callable[[str], None]:
        """Record the server's run id at once, so no later attempt submits the run again."""

        def record(run_id: str) -> None:
            try:
                self.outcomes.record(Step(started.model_copy(update={"run_id": run_id, "updated_at": _now()})), fence)
            except Refused as refused:  # the lease went elsewhere; that worker finds the run by its name
                self.log.warning("trigger.fenced", reason=f"refused to record the run id: {refused.reason}")

        return record

    def _start(self, job: Job, state: RequestState, target: Target) -> RequestState:
        """Record the attempt `running` (fenced: only the lease holder may start it), then mark it seen."""
        request, attempt = job.request, state.attempts + 1
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
            step=None,
            **self._covered(request.request_id),
        )
        self.outcomes.record(Step(started), job.fence)
        self.s.leases.mark_seen(request.request_id)
        self.s.checkpoint("started", request.request_id)
        self.log.info(
            "trigger.started", attempt=attempt, run_name=run_name, parameters=plan.parameters, steps=plan.steps
        )
        return started

    def _covered(self, request_id: str) -> dict[str, Any]:
        """The requests coalesced into this one so far, for its state."""
        ids, count = self.coalescing.covered(request_id)
        return {"coalesced_from": ids, "coalesced_count": count}

    # -- outcomes ------------------------------------------------------------

    def _record_outcome(self, job: Job, state: RequestState, outcome: RunOutcome) -> RequestState:
        """Record a run's outcome for the attempt `state` describes."""
        attempts = max(state.attempts, 1)
        if outcome.status == "submitted":
            state = state.advance(Status.SUBMITTED, attempts=attempts, run_id=outcome.run_id, run_name=outcome.run_name)
            self.outcomes.record(Step(state), job.fence)
            self.log.info("trigger.submitted", run_id=outcome.run_id)
            return state
        if not outcome.succeeded:
            error = PipelineRunFailed(f"run {outcome.run_name} ended {outcome.status}", run_id=outcome.run_id)
            state = state.model_copy(update={"run_id": outcome.run_id})
            return self._end(state, Status.FAILED, error, state.attempts, job.delivery, job.fence)
        state = state.advance(
            Status.SUCCEEDED,
            attempts=attempts,
            run_id=outcome.run_id,
            run_name=outcome.run_name,
            metrics=outcome.metrics,
            error=None,
            worker=HOST,
            **self._covered(state.request_id),
        )
        self.outcomes.record(Step(state), job.fence)
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
            return self._end(state, Status.DEAD_LETTERED, exc, attempt, job.delivery, job.fence)
        due = time.time() + delay
        state = state.advance(
            Status.RETRYING,
            attempts=attempt,
            error=ErrorInfo(**exc.as_dict()),
            next_attempt_at=datetime.fromtimestamp(due, timezone.utc),
        )
        envelope = self._envelope(job, {"attempt": attempt + 1})
        self.outcomes.record(Step(state, next_attempt=(envelope, due)), job.fence)
        self.log.warning("trigger.retrying", attempt=attempt, delay_s=round(delay, 3), error=state.error.message)
        return state

    def _end(
        self, state: RequestState, status: Status, exc: Any, attempt: int, delivery: Delivery, fence: str | None = None
    ) -> RequestState:
        """Record a non-successful terminal state, its dead letter (the delivery's raw bytes) and the release
        of its idempotency key, in one atomic write (fenced by the lease holder `fence`, when given)."""
        state = state.advance(
            status,
            attempts=max(attempt, 1),
            error=ErrorInfo(**exc.as_dict()),
            worker=HOST,
            next_attempt_at=None,
        )
        letter = _letter(state, delivery.kept(self.s.dead_letters))
        self.outcomes.record(Step(state, letter=letter, release_claim=state.duplicate_of is None), fence)
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


def provenance(request: TriggerRequest) -> Provenance:
    """Why the run starts, for the dashboard: the request's id, source, keys and metadata; tagged by source."""
    keys_ = {"trigger_idempotency_key": request.idempotency_key, "trigger_coalesce_key": request.coalesce_key}
    metadata = {"trigger_request_id": request.request_id, "trigger_source": request.source}
    metadata |= {k: v for k, v in keys_.items() if v is not None}
    if request.metadata:
        metadata["trigger_metadata"] = dict(request.metadata)
    return Provenance(metadata=metadata, tags=(f"trigger-source:{request.source}",))


def _resolved(state: RequestState, target: Target) -> RequestState:
    """The state with the pipeline and template its request resolved to, as the admission chain sees it."""
    ref = target.template.ref if target.template else None
    return state.model_copy(update={"pipeline_name": target.entry.name, "template_ref": ref})


def _may_take(state: RequestState, readable: bool) -> bool:
    """Whether a delivery may be recorded over `state`: never an ended one, nor a readable request's."""
    if state.status.terminal:
        return False
    return readable or (state.status in NOT_STARTED and state.pipeline_name is None and state.template is None)


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _duration(state: RequestState) -> float | None:
    if state.started_at and state.finished_at:
        return round((state.finished_at - state.started_at).total_seconds(), 3)
    return None
