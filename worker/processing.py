"""The trigger path as plain functions: decode -> deduplicate -> resolve -> validate -> run -> record.

Nothing here knows Celery; the task is a thin adapter over `Processor.handle`, so the
whole path is callable and testable on its own.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace
from functools import partial
from typing import Any

import redis

from pipelines.registry import RegisteredPipeline
from producers.contract import TriggerRequest, check_payload_size, decode_request
from producers.errors import InvalidRequest, MalformedRequest, PermanentError, Problem, TransientError
from producers.state import RequestState, Status
from worker.admission import Admission, Coalescing
from worker.authorization import Authorization
from worker.delivery import Delivery
from worker.early import EarlyEnds
from worker.errors import PipelineRunFailed, RunTimeout, WorkerLost
from worker.execution import Execution, HandedOn
from worker.job import HOST, Job, envelope, now
from worker.limits import ConcurrencyLimits
from worker.logs import bound_context, get_logger
from worker.not_before import NotBefore
from worker.outcomes import Outcomes, Refused, Step
from worker.recording import Recorder
from worker.resolution import Resolver, Target
from worker.services import Services
from worker.signature import PipelineSignature
from worker.step_watch import Seen, StepWatch
from worker.unreadable import Unreadable

__all__ = ["Delivery", "HandedOn", "Job", "Processor", "Services", "Target"]

RESOLVE_RETRY_S = 5.0
"""When resolving a request hits an unavailable store (a template lookup), look again this much later."""


class InternalError(PermanentError):
    """The worker hit an unexpected error; the request is dead-lettered for replay."""


class Processor:
    """Takes one delivery to exactly one recorded outcome; never raises for a bad message."""

    def __init__(self, services: Services) -> None:
        self.s = services
        settings, observer, pipelines = services.settings, services.observer, services.registry.names()
        outcomes = Outcomes(services.states, services.dead_letters, services.schedule, observer, pipelines)
        poll = min(10.0, max(1.0, settings.lease_timeout / 6))
        client, fence = services.states.client, services.leases.fence
        self.coalescing = Coalescing(client, settings.lease_timeout, settings.state_ttl, poll, fence)
        limits = ConcurrencyLimits(client, settings.concurrency_limits, settings.queue, poll, pipelines)
        self.admissions: tuple[Admission, ...] = (NotBefore(), self.coalescing, limits)
        self.early = EarlyEnds(services.states.client, settings.queue, settings.state_ttl, HOST, observer, pipelines)
        self.authorization = Authorization.from_settings(settings)
        self.steps = StepWatch(services.runner.running_step, services.states, outcomes, settings.step_interval)
        self.resolver = Resolver(services)
        self.recorder = Recorder(services, outcomes, self.coalescing)
        self.execution = Execution(services, self.recorder)
        self.unreadable = Unreadable(services, self.recorder)
        self.log = get_logger()

    @property
    def outcomes(self) -> Outcomes:
        """Where every step is written (the recorder's)."""
        return self.recorder.outcomes

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
            return self.unreadable.record(delivery, Status.DEAD_LETTERED, error, readable=self._readable(delivery))

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
            return self.unreadable.record(delivery, Status.REJECTED, exc)
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
                return self.recorder.end(state, Status.FAILED, error, max(state.attempts, 1), delivery, fence)

    def _await_lease(self, request_id: str, wait: float) -> bool:
        deadline = time.monotonic() + wait
        while not self.s.leases.acquire(request_id):
            if time.monotonic() > deadline:
                return False
            time.sleep(0.5)
        return True

    def signature(self, entry: RegisteredPipeline) -> PipelineSignature:
        """The pipeline's signature, compiled once per process."""
        return self.resolver.signature(entry)

    # -- decoding -----------------------------------------------------------

    def _decode(self, delivery: Delivery) -> TriggerRequest:
        payload = delivery.payload()
        problem = delivery.problem()
        if problem:
            raise MalformedRequest(raw=payload, details=[Problem("", problem)])
        check_payload_size(payload, self.s.settings.max_payload_bytes)
        return decode_request(payload)

    def _readable(self, delivery: Delivery) -> bool:
        """Whether the delivery holds a valid request under its own task id (so a crash is recorded there)."""
        try:
            return self._decode(delivery).request_id == delivery.task_id
        except Exception:  # noqa: BLE001 - anything unreadable is simply not readable
            return False

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
        self.s.schedule.defer(envelope(job, self.s.settings.queue, kwargs), due, job.request.request_id)

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
            return self.recorder.duplicate(state, owner)
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
        return self.recorder.end(state, Status.REJECTED, exc, state.attempts + 1, job.delivery, job.fence)

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
                outcome = self.execution.execute(job, target, state)
            self.s.checkpoint("ran", job.request.request_id)
            return self.recorder.record_outcome(job, seen.stamp(state), outcome)
        except HandedOn as handed:
            return handed.state
        except PipelineRunFailed as exc:
            state = seen.stamp(state).model_copy(update={"run_id": exc.run_id or state.run_id})
            return self.recorder.end(state, Status.FAILED, exc, state.attempts, job.delivery, job.fence)
        except TransientError as exc:
            return self.recorder.retry_or_give_up(job, seen.stamp(state), exc)

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
        earlier = self.execution.earlier_outcome(target, state)
        if earlier is not None:
            return self.recorder.record_outcome(job, state, earlier)
        return self._count_lost(job, state) if state.status is Status.RUNNING else None

    def _count_lost(self, job: Job, state: RequestState) -> RequestState:
        """Mark the dead attempt's ZenML run failed, then treat the attempt like a transient failure."""
        lost = state.lost_attempts + 1
        run_id = self.s.runner.abandon(state.run_name, "its worker died during the run") if state.run_name else None
        state = state.model_copy(update={"lost_attempts": lost, "run_id": run_id or state.run_id})
        plural = "attempt" if lost == 1 else "attempts"
        error = WorkerLost(f"{lost} {plural} died with their worker (last run {state.run_name})")
        self.log.warning("trigger.worker_lost", attempt=state.attempts, lost_attempts=lost, run_id=state.run_id)
        return self.recorder.retry_or_give_up(job, state, error)

    def _resolve(self, request: TriggerRequest) -> Target:
        return self.resolver.resolve(request)

    def _claim(self, request: TriggerRequest) -> str:
        if request.idempotency_key is None:
            return request.request_id
        return self.s.claims.claim(request.idempotency_key, request.request_id)

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
            started_at=now(),
            worker=HOST,
            error=None,
            next_attempt_at=None,
            step=None,
            **self.recorder.covered(request.request_id),
        )
        self.outcomes.record(Step(started), job.fence)
        self.s.leases.mark_seen(request.request_id)
        self.s.checkpoint("started", request.request_id)
        self.log.info(
            "trigger.started", attempt=attempt, run_name=run_name, parameters=plan.parameters, steps=plan.steps
        )
        return started

    # -- outcomes ------------------------------------------------------------


def _resolved(state: RequestState, target: Target) -> RequestState:
    """The state with the pipeline and template its request resolved to, as the admission chain sees it."""
    ref = target.template.ref if target.template else None
    return state.model_copy(update={"pipeline_name": target.entry.name, "template_ref": ref})
