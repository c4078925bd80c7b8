"""The worker's Prometheus metrics, recorded for each way a request ends (the walk on fakeredis)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from producers import TriggerClient, keys
from producers.contract import TriggerRequest, encode_request, normalize_steps
from producers.errors import TransientError
from producers.settings import ProducerSettings
from producers.state import RequestState, Status
from tests.unit.conftest import FakeRunner
from worker.errors import PipelineRunFailed
from worker.metrics import MetricsObserver, WorkerMetrics, observer_for
from worker.outcomes import Step, Unobserved
from worker.processing import Delivery, Processor
from worker.settings import WorkerSettings

PIPELINE = "training_pipeline"


class Metered:
    """A processor over fakeredis whose observer records into a private registry."""

    def __init__(self, make_services: Callable[..., Any], runner: Any, settings: Any = None) -> None:
        self.registry = CollectorRegistry()
        services = make_services(runner, settings)
        services.observer = MetricsObserver(WorkerMetrics(self.registry), services.registry.names())
        self.processor = Processor(services)

    def value(self, name: str, **labels: str) -> float:
        return self.registry.get_sample_value(name, labels) or 0.0

    def handle(self, request: TriggerRequest) -> RequestState:
        return self.processor.handle(Delivery(raw=encode_request(request), task_id=request.request_id))

    def counted(self) -> dict[bytes, bytes]:
        """The cluster-wide outcome counts in Redis."""
        return self.processor.s.states.client.hgetall(keys.outcome_counts_key(self.processor.s.settings.queue))


@pytest.fixture
def metered(make_services: Callable[..., Any], runner: FakeRunner) -> Metered:
    return Metered(make_services, runner)


def request(**fields: Any) -> TriggerRequest:
    fields.setdefault("pipeline_name", PIPELINE)
    fields["steps"] = normalize_steps(fields.get("steps"))
    return TriggerRequest(**fields)


def test_a_success_counts_the_request_its_attempt_its_duration_and_its_wait(metered: Metered) -> None:
    assert metered.handle(request()).status is Status.SUCCEEDED
    assert metered.value("trigger_requests_total", pipeline=PIPELINE, status="succeeded") == 1
    assert metered.value("trigger_attempts_total", pipeline=PIPELINE) == 1
    assert metered.value("trigger_run_duration_seconds_count", pipeline=PIPELINE, status="succeeded") == 1
    assert metered.value("trigger_queue_wait_seconds_count", pipeline=PIPELINE) == 1
    assert metered.value("trigger_runs_in_flight", pipeline=PIPELINE) == 0
    assert metered.value("trigger_dead_letters_total", pipeline=PIPELINE) == 0
    assert metered.counted() == {b"succeeded:training_pipeline": b"1"}


def test_a_rejection_counts_its_dead_letter_and_no_attempt(metered: Metered) -> None:
    assert metered.handle(request(steps={"no_such_step": {"x": 1}})).status is Status.REJECTED
    assert metered.value("trigger_requests_total", pipeline=PIPELINE, status="rejected") == 1
    assert metered.value("trigger_dead_letters_total", pipeline=PIPELINE) == 1
    assert metered.value("trigger_attempts_total", pipeline=PIPELINE) == 0
    assert metered.counted() == {b"rejected:training_pipeline": b"1"}


def test_a_pipeline_nobody_registered_is_counted_as_other_so_labels_stay_bounded(metered: Metered) -> None:
    metered.handle(request(pipeline_name="made_up_by_a_caller"))
    assert metered.value("trigger_requests_total", pipeline="other", status="rejected") == 1
    assert metered.counted() == {b"rejected:other": b"1"}


def test_an_unreadable_payload_is_counted_too(metered: Metered) -> None:
    metered.processor.handle(Delivery(raw="{not json", task_id="garbage-1"))
    assert metered.value("trigger_requests_total", pipeline="other", status="rejected") == 1


def test_a_failed_run_is_timed_under_failed_and_dead_lettered(make_services: Callable[..., Any]) -> None:
    metered = Metered(make_services, FakeRunner(PipelineRunFailed("step exploded", run_id="r-1")))
    assert metered.handle(request()).status is Status.FAILED
    assert metered.value("trigger_requests_total", pipeline=PIPELINE, status="failed") == 1
    assert metered.value("trigger_run_duration_seconds_count", pipeline=PIPELINE, status="failed") == 1
    assert metered.value("trigger_dead_letters_total", pipeline=PIPELINE) == 1
    assert metered.value("trigger_runs_in_flight", pipeline=PIPELINE) == 0


def test_a_transient_failure_counts_a_retry_and_no_outcome_yet(make_services: Callable[..., Any]) -> None:
    metered = Metered(make_services, FakeRunner(TransientError("store away")))
    assert metered.handle(request()).status is Status.RETRYING
    assert metered.value("trigger_retries_total", pipeline=PIPELINE) == 1
    assert metered.value("trigger_run_duration_seconds_count", pipeline=PIPELINE, status="retrying") == 1
    assert metered.value("trigger_runs_in_flight", pipeline=PIPELINE) == 0
    assert (
        metered.registry.get_sample_value("trigger_requests_total", {"pipeline": PIPELINE, "status": "retrying"})
        is None
    )
    assert metered.counted() == {}


def test_the_last_transient_failure_is_dead_lettered(make_services: Callable[..., Any], worker_settings: Any) -> None:
    settings = worker_settings.model_copy(update={"max_attempts": 1})
    metered = Metered(make_services, FakeRunner(TransientError("store away")), settings)
    assert metered.handle(request()).status is Status.DEAD_LETTERED
    assert metered.value("trigger_requests_total", pipeline=PIPELINE, status="dead_lettered") == 1
    assert metered.value("trigger_dead_letters_total", pipeline=PIPELINE) == 1
    assert metered.value("trigger_retries_total", pipeline=PIPELINE) == 0


def test_a_duplicate_is_counted_once_whether_it_ends_early_or_in_the_walk(metered: Metered) -> None:
    first = request(idempotency_key="k")
    metered.handle(first)
    metered.processor.s.claims.claim("k2", "someone-else")
    assert metered.handle(request(idempotency_key="k")).status is Status.DUPLICATE  # on arrival
    assert metered.handle(request(idempotency_key="k2")).status is Status.DUPLICATE  # in the walk
    assert metered.value("trigger_requests_total", pipeline=PIPELINE, status="duplicate") == 2
    assert metered.counted() == {b"succeeded:training_pipeline": b"1", b"duplicate:training_pipeline": b"2"}


def test_a_superseded_request_is_counted_coalesced(metered: Metered) -> None:
    client = TriggerClient(
        metered.processor.s.states.client, ProducerSettings(queue=metered.processor.s.settings.queue)
    )
    older, newer = (request(coalesce_key="nightly") for _ in range(2))
    client.send(older)
    client.send(newer)
    assert metered.handle(older).status is Status.COALESCED
    assert metered.value("trigger_requests_total", pipeline=PIPELINE, status="coalesced") == 1
    assert metered.counted() == {b"coalesced:training_pipeline": b"1"}


def test_a_redelivered_copy_of_a_finished_request_counts_nothing_more(metered: Metered) -> None:
    done = request()
    metered.handle(done)
    metered.handle(done)
    assert metered.value("trigger_requests_total", pipeline=PIPELINE, status="succeeded") == 1
    assert metered.value("trigger_attempts_total", pipeline=PIPELINE) == 1
    assert metered.counted() == {b"succeeded:training_pipeline": b"1"}


def running(request_id: str = "r-1", attempts: int = 1, waited: float = 2.5) -> RequestState:
    queued = RequestState(request_id=request_id, status=Status.QUEUED, pipeline_name=PIPELINE)
    return queued.advance(Status.RUNNING, attempts=attempts, started_at=queued.created_at + timedelta(seconds=waited))


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def observer(clock: Callable[[], float] | None = None) -> tuple[MetricsObserver, CollectorRegistry]:
    registry = CollectorRegistry()
    return MetricsObserver(WorkerMetrics(registry), [PIPELINE], clock or Clock()), registry


def test_an_attempt_is_timed_from_its_running_record_to_its_next_record() -> None:
    clock = Clock()
    watcher, registry = observer(clock)
    state = running()
    watcher.recorded(Step(state))
    watcher.recorded(Step(state.model_copy(update={"run_id": "server-run"})))  # the run id, recorded mid-run
    assert registry.get_sample_value("trigger_runs_in_flight", {"pipeline": PIPELINE}) == 1
    clock.now += 7
    watcher.recorded(Step(state.advance(Status.SUCCEEDED)))
    labels = {"pipeline": PIPELINE, "status": "succeeded"}
    assert registry.get_sample_value("trigger_run_duration_seconds_sum", labels) == 7
    assert registry.get_sample_value("trigger_attempts_total", {"pipeline": PIPELINE}) == 1
    assert registry.get_sample_value("trigger_queue_wait_seconds_sum", {"pipeline": PIPELINE}) == 2.5


def test_a_fenced_attempt_leaves_the_in_flight_gauge_untimed() -> None:
    watcher, registry = observer()
    state = running()
    watcher.recorded(Step(state))
    watcher.refused(Step(state.advance(Status.SUCCEEDED)))
    assert registry.get_sample_value("trigger_runs_in_flight", {"pipeline": PIPELINE}) == 0
    assert (
        registry.get_sample_value("trigger_run_duration_seconds_count", {"pipeline": PIPELINE, "status": "succeeded"})
        is None
    )


def test_only_a_first_attempt_is_a_queue_wait() -> None:
    watcher, registry = observer()
    watcher.recorded(Step(running(attempts=2)))
    assert registry.get_sample_value("trigger_queue_wait_seconds_count", {"pipeline": PIPELINE}) is None


def test_metrics_off_means_no_observer() -> None:
    settings = WorkerSettings(redis_url="redis://unused.invalid:6379/0", metrics_port=0)
    assert isinstance(observer_for(settings, [PIPELINE]), Unobserved)


def test_a_failing_metric_never_changes_the_recorded_outcome(metered: Metered, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*_args: Any) -> None:
        raise OSError("No space left on device")

    monkeypatch.setattr(metered.processor.outcomes.observer, "_recorded", broken)
    assert metered.handle(request(request_id="ok-despite-metrics")).status is Status.SUCCEEDED
    assert metered.processor.s.states.get("ok-despite-metrics").status is Status.SUCCEEDED  # type: ignore[union-attr]
    assert metered.processor.s.dead_letters.count() == 0
