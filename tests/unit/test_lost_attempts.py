"""Attempts that die with their worker count toward the retry limit; a killed run ends `failed`."""

from __future__ import annotations

from typing import Any

from structlog.testing import capture_logs

from producers.state import RequestState, Status
from tests.unit.test_processing import deliver, make_request
from worker.processing import Processor


def interrupted(processor: Processor, request_id: str, attempts: int, lost: int = 0, key: str | None = None) -> Any:
    """A request whose attempt `attempts` was `running` when its worker died."""
    request = make_request(request_id=request_id, idempotency_key=key)
    run_name = f"training_pipeline-{request_id}-{attempts}"
    state = RequestState.queued(request).advance(
        Status.RUNNING, attempts=attempts, lost_attempts=lost, run_name=run_name
    )
    processor.s.states.put(state)
    if key:
        processor.s.claims.claim(key, request_id)
    return request


def test_a_redelivered_running_request_counts_a_lost_attempt_and_retries(processor: Processor, runner: Any) -> None:
    request = interrupted(processor, "lost-1", attempts=1)

    with capture_logs() as logs:
        state = processor.handle(deliver(request))

    assert state.status is Status.RETRYING and state.lost_attempts == 1 and state.attempts == 1
    assert state.error is not None and state.error.type == "WorkerLost"
    assert "1 attempt died" in state.error.message
    assert runner.calls == [] and runner.abandoned == [("training_pipeline-lost-1-1", "its worker died during the run")]
    assert processor.s.schedule.pending() == 1
    assert "trigger.worker_lost" in [entry["event"] for entry in logs]


def test_past_the_limit_lost_attempts_end_dead_lettered(processor: Processor, runner: Any) -> None:
    request = interrupted(processor, "lost-2", attempts=3, lost=2, key="drift:lost")  # max_attempts is 3

    state = processor.handle(deliver(request, attempt=3))

    assert state.status is Status.DEAD_LETTERED
    assert state.error is not None and state.error.type == "WorkerLost"
    assert "3 attempts died with their worker" in state.error.message
    assert state.run_id == "abandoned-training_pipeline-lost-2-3"
    assert processor.s.dead_letters.get("lost-2") is not None
    assert processor.s.claims.claim("drift:lost", "other") == "other", "the key is released"
    assert runner.calls == []


def test_the_next_attempt_after_a_lost_one_runs(processor: Processor, runner: Any) -> None:
    request = interrupted(processor, "lost-3", attempts=1)
    processor.handle(deliver(request))

    state = processor.handle(deliver(request, attempt=2))

    assert state.status is Status.SUCCEEDED and state.attempts == 2 and state.lost_attempts == 1
    assert len(runner.calls) == 1


def test_a_run_killed_at_the_hard_limit_ends_failed_with_run_timeout(processor: Processor, runner: Any) -> None:
    request = interrupted(processor, "killed-1", attempts=1, key="drift:killed")

    state = processor.record_killed(deliver(request), 3630, wait=1)

    assert state is not None and state.status is Status.FAILED
    assert state.error is not None and state.error.type == "RunTimeout" and "3630s" in state.error.message
    assert state.run_id == "abandoned-training_pipeline-killed-1-1"
    assert processor.s.dead_letters.get("killed-1") is not None
    assert processor.s.claims.claim("drift:killed", "other") == "other"


def test_a_killed_run_whose_request_already_ended_is_left_alone(processor: Processor, runner: Any) -> None:
    request = make_request(request_id="done-2")
    processor.handle(deliver(request))

    state = processor.record_killed(deliver(request), 10, wait=1)

    assert state is not None and state.status is Status.SUCCEEDED
    assert runner.abandoned == []


def test_a_killed_run_is_recorded_only_once_the_child_lets_go_of_its_lease(processor: Processor, runner: Any) -> None:
    """Celery reports the hard timeout before it kills the child; a child still holding its lease wins."""
    request = interrupted(processor, "killed-2", attempts=1)
    processor.s.leases.client.set("zenml-trigger:lease:killed-2", "the-child", ex=60)

    assert processor.record_killed(deliver(request), 10, wait=0.6) is None
    assert processor.s.states.get("killed-2").status is Status.RUNNING  # type: ignore[union-attr]
    assert processor.s.dead_letters.get("killed-2") is None
