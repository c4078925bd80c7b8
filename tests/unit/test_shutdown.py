"""A run cut off by the worker's shutdown: handed on as a retry under its lease, never recorded as a failure."""

from __future__ import annotations

import signal
from collections.abc import Callable
from typing import Any

import pytest
from billiard import common
from structlog.testing import capture_logs

from producers.state import RequestState, Status
from tests.unit.test_processing import deliver, events, make_request, stored
from worker import shutdown
from worker.app import celery_config
from worker.processing import Processor
from worker.settings import WorkerSettings

CUT_OFF = SystemExit(-(256 - signal.SIGQUIT))
"""What billiard's terminate handler raises inside a prefork child's run."""


@pytest.fixture
def stopping_processor(make_services: Callable[..., Any], runner: Any) -> Processor:
    """A processor whose process is being stopped, with a run that the stop interrupts."""
    runner.script.append(CUT_OFF)
    services = make_services(runner)
    services.stopping = lambda: True
    return Processor(services)


def test_a_run_cut_off_by_a_shutdown_is_scheduled_again_and_its_zenml_run_marked_failed(
    stopping_processor: Processor, runner: Any
) -> None:
    request = make_request(request_id="cut-1")

    with capture_logs() as logs, pytest.raises(SystemExit):
        stopping_processor.handle(deliver(request))

    state = stored(stopping_processor, "cut-1")
    assert state.status is Status.RETRYING and state.attempts == 1 and state.lost_attempts == 0
    assert state.error is not None and state.error.type == "WorkerShutdown"
    run_name = "training_pipeline-cut-1-1"
    assert runner.abandoned == [(run_name, f"the worker shut down during run {run_name}")]
    assert state.run_id == "abandoned-training_pipeline-cut-1-1"
    assert stopping_processor.s.schedule.pending() == 1
    assert stopping_processor.s.leases.remaining("cut-1") == 0, "the lease is given back"
    handed_on = [event for event in events(logs) if event in {"trigger.interrupted", "trigger.retrying"}]
    assert handed_on == ["trigger.interrupted", "trigger.retrying"]


def test_the_copy_put_back_on_the_queue_is_skipped_and_the_next_attempt_runs_once(
    stopping_processor: Processor, runner: Any
) -> None:
    request = make_request(request_id="cut-2")
    with pytest.raises(SystemExit):
        stopping_processor.handle(deliver(request))
    stopping_processor.s.stopping = lambda: False

    restored = stopping_processor.handle(deliver(request))
    retried = stopping_processor.handle(deliver(request, attempt=2))

    assert restored.status is Status.RETRYING, "kombu's restored copy is a stale copy of a scheduled retry"
    assert retried.status is Status.SUCCEEDED and retried.attempts == 2
    assert [call[2] for call in runner.calls] == ["training_pipeline-cut-2-1", "training_pipeline-cut-2-2"]


def test_without_a_shutdown_the_exit_goes_on_unrecorded(make_services: Callable[..., Any], runner: Any) -> None:
    runner.script.append(SystemExit(3))
    processor = Processor(make_services(runner))

    with pytest.raises(SystemExit):
        processor.handle(deliver(make_request(request_id="exit-1")))

    assert stored(processor, "exit-1").status is Status.RUNNING
    assert runner.abandoned == [] and processor.s.schedule.pending() == 0


def test_past_the_retry_limit_a_shutdown_ends_dead_lettered(stopping_processor: Processor, runner: Any) -> None:
    request = make_request(request_id="cut-3")  # max_attempts is 3 in these settings
    stopping_processor.s.states.put(RequestState.queued(request).advance(Status.RETRYING, attempts=2))

    with pytest.raises(SystemExit):
        stopping_processor.handle(deliver(request, attempt=3))

    assert stored(stopping_processor, "cut-3").status is Status.DEAD_LETTERED


def test_stopping_is_billiards_terminate_flag(monkeypatch: pytest.MonkeyPatch) -> None:
    assert shutdown.stopping() is False
    monkeypatch.setattr(common, "_should_have_exited", [True])
    assert shutdown.stopping() is True


@pytest.mark.parametrize("flag", ["should_stop", "should_terminate"])
def test_with_the_solo_pool_stopping_is_the_workers_own_shutdown(monkeypatch: pytest.MonkeyPatch, flag: str) -> None:
    from celery.worker import state

    monkeypatch.setattr(state, flag, 0)  # EX_OK: a warm shutdown's exit code is still a shutdown
    assert shutdown.stopping() is True


def test_celery_gets_the_shutdown_remote_control_and_event_settings() -> None:
    default = celery_config(WorkerSettings())
    chosen = celery_config(WorkerSettings(soft_shutdown_timeout=45, remote_control=False, task_events=True))

    assert default["worker_soft_shutdown_timeout"] == 10 and default["worker_enable_soft_shutdown_on_idle"] is False
    assert default["worker_enable_remote_control"] is True and default["worker_send_task_events"] is False
    assert chosen["worker_soft_shutdown_timeout"] == 45
    assert chosen["worker_enable_remote_control"] is False and chosen["worker_send_task_events"] is True
    assert default["broker_transport_options"]["guarded_queues"] == ("zenml-triggers",)


def test_with_the_solo_pool_the_interrupted_run_is_handed_on_not_recorded_failed(
    make_services: Callable[..., Any], runner: Any
) -> None:
    """ZenML's SIGTERM handler raises in the step, so the runner reports a failed run; the shutdown wins."""
    from worker.errors import PipelineRunFailed

    runner.script.append(PipelineRunFailed("run failed: RunInterruptedException: The execution was interrupted."))
    services = make_services(runner)
    services.stopping = lambda: True

    state = Processor(services).handle(deliver(make_request(request_id="solo-1")))

    assert state.status is Status.RETRYING and state.error is not None and state.error.type == "WorkerShutdown"
    assert stored(Processor(services), "solo-1").status is Status.RETRYING
    assert services.dead_letters.get("solo-1") is None


def test_a_run_past_its_time_limit_is_left_to_the_pools_hard_limit(
    make_services: Callable[..., Any], runner: Any, worker_settings: Any
) -> None:
    """The pool's hard time limit also sends the child a terminate signal: that is no shutdown to hand on."""
    runner.script.append(CUT_OFF)
    services = make_services(runner, settings=worker_settings.model_copy(update={"run_timeout": 0.0}))
    services.stopping = lambda: True

    with pytest.raises(SystemExit):
        Processor(services).handle(deliver(make_request(request_id="late-1")))

    assert stored(Processor(services), "late-1").status is Status.RUNNING
    assert runner.abandoned == [] and services.schedule.pending() == 0
