"""Deliveries that hold no usable request: recorded under an id of their own with their raw bytes, never over
another request's record, and a redelivery of one already lettered skipped."""

from __future__ import annotations

import uuid
from typing import Any

from producers.contract import peek_request_id
from producers.state import NOT_STARTED, RequestState, Status
from worker.delivery import Delivery, letter_holds
from worker.logs import bound_context, get_logger
from worker.recording import Recorder
from worker.services import Services


class Unreadable:
    """Ends an unreadable delivery (or one the walk's guard caught a bug on) `rejected` or `dead_lettered`."""

    def __init__(self, services: Services, recorder: Recorder) -> None:
        self.s, self.recorder = services, recorder
        self.log = get_logger()

    def record(self, delivery: Delivery, status: Status, exc: Any, readable: bool = False) -> RequestState:
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
            return self.recorder.end(state, status, exc, max(state.attempts, 1), delivery)

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

    def _already_lettered(self, request_id: str, delivery: Delivery) -> bool:
        letter = self.s.dead_letters.get(request_id)
        return letter is not None and letter_holds(letter, delivery)


def _may_take(state: RequestState, readable: bool) -> bool:
    """Whether a delivery may be recorded over `state`: never an ended one, nor a readable request's."""
    if state.status.terminal:
        return False
    return readable or (state.status in NOT_STARTED and state.pipeline_name is None and state.template is None)
