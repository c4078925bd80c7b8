"""Recording what became of an attempt: succeeded, submitted, failed, retrying or ended, each one fenced write
(`worker.outcomes`) with its dead letter, claim release or next attempt, and one log line."""

from __future__ import annotations

import time
from datetime import datetime, timezone
from typing import Any

from producers.errors import TransientError
from producers.state import ErrorInfo, RequestState, Status
from worker.admission import Coalescing
from worker.dead_letters import BoundedPayload, DeadLetter
from worker.delivery import Delivery
from worker.errors import PipelineRunFailed
from worker.job import HOST, Job, envelope
from worker.logs import get_logger
from worker.outcomes import Outcomes, Step
from worker.retry import RetryPolicy
from worker.runner import RunOutcome
from worker.services import Services


class Recorder:
    """Writes the end of each attempt; `outcomes` is where every step goes (a test may wrap it)."""

    def __init__(self, services: Services, outcomes: Outcomes, coalescing: Coalescing) -> None:
        self.s, self.outcomes, self.coalescing = services, outcomes, coalescing
        self.log = get_logger()

    def duplicate(self, state: RequestState, owner: str) -> RequestState:
        state = state.advance(Status.DUPLICATE, duplicate_of=owner, attempts=state.attempts + 1, worker=HOST)
        self.outcomes.record(Step(state), holder=None)
        self.log.info("trigger.duplicate", duplicate_of=owner)
        return state

    def covered(self, request_id: str) -> dict[str, Any]:
        """The requests coalesced into this one so far, for its state."""
        ids, count = self.coalescing.covered(request_id)
        return {"coalesced_from": ids, "coalesced_count": count}

    def record_outcome(self, job: Job, state: RequestState, outcome: RunOutcome) -> RequestState:
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
            return self.end(state, Status.FAILED, error, state.attempts, job.delivery, job.fence)
        state = state.advance(
            Status.SUCCEEDED,
            attempts=attempts,
            run_id=outcome.run_id,
            run_name=outcome.run_name,
            metrics=outcome.metrics,
            error=None,
            worker=HOST,
            **self.covered(state.request_id),
        )
        self.outcomes.record(Step(state), job.fence)
        self.log.info("trigger.succeeded", run_id=outcome.run_id, metrics=outcome.metrics, duration_s=_duration(state))
        return state

    def retry_or_give_up(self, job: Job, state: RequestState, exc: TransientError) -> RequestState:
        """Schedule the next attempt after the attempt `state` describes, or dead-letter past the limit."""
        fresh = self.s.states.get(state.request_id)  # may now carry a submitted server run's id
        if fresh is not None and fresh.run_id and not state.run_id:
            state = state.model_copy(update={"run_id": fresh.run_id})
        attempt = max(state.attempts, 1)
        pipeline = state.pipeline_name or job.request.pipeline_name
        delay = RetryPolicy.for_pipeline(self.s.settings, pipeline).delay(exc, attempt)
        if delay is None:
            return self.end(state, Status.DEAD_LETTERED, exc, attempt, job.delivery, job.fence)
        due = time.time() + delay
        state = state.advance(
            Status.RETRYING,
            attempts=attempt,
            error=ErrorInfo(**exc.as_dict()),
            next_attempt_at=datetime.fromtimestamp(due, timezone.utc),
        )
        next_copy = envelope(job, self.s.settings.queue, {"attempt": attempt + 1})
        self.outcomes.record(Step(state, next_attempt=(next_copy, due)), job.fence)
        self.log.warning("trigger.retrying", attempt=attempt, delay_s=round(delay, 3), error=state.error.message)
        return state

    def end(
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


def _duration(state: RequestState) -> float | None:
    if state.started_at and state.finished_at:
        return round((state.finished_at - state.started_at).total_seconds(), 3)
    return None
