"""The worker's Prometheus metrics, updated where outcomes are recorded (`Outcomes`, `EarlyEnds`).

`MetricsObserver` is told of every step Redis took and turns it into counter, histogram and gauge
updates, so the request's walk holds no metrics code. Metric names and labels are a contract (the
compose stack's Prometheus and Grafana dashboard read them); the README lists them.

`prometheus_client` is imported when the metrics are made, not with this module: the worker's main
process must point `PROMETHEUS_MULTIPROC_DIR` at its directory first (see `worker.metrics_server`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any

from producers.state import RequestState, Status
from producers.stats import pipeline_label
from worker.logs import get_logger
from worker.outcomes import Observer, Step, Unobserved
from worker.settings import WorkerSettings

RUN_BUCKETS = (0.1, 0.5, 1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200, float("inf"))
"""Seconds: a run is anything from a rejected plan's blink to a long training job."""

WAIT_BUCKETS = (0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 15, 60, 300, 900, 3600, float("inf"))
"""Seconds a request waited for its first attempt: milliseconds when idle, minutes behind a backlog."""


class WorkerMetrics:
    """The metric objects of one worker process; `registry` None leaves them to the multiprocess files."""

    def __init__(self, registry: Any = None) -> None:
        from prometheus_client import Counter, Gauge, Histogram

        def made(kind: Any, name: str, doc: str, labels: list[str], **extra: Any) -> Any:
            return kind(name, doc, labels, registry=registry, **extra)

        self.requests = made(Counter, "trigger_requests", "Requests ended, by terminal status.", ["pipeline", "status"])
        self.attempts = made(Counter, "trigger_attempts", "Run attempts started.", ["pipeline"])
        self.retries = made(Counter, "trigger_retries", "Retries scheduled.", ["pipeline"])
        self.dead_letters = made(Counter, "trigger_dead_letters", "Dead letters written.", ["pipeline"])
        self.run_duration = made(
            Histogram,
            "trigger_run_duration_seconds",
            "Wall time of a run attempt, by the status it ended in.",
            ["pipeline", "status"],
            buckets=RUN_BUCKETS,
        )
        self.queue_wait = made(
            Histogram,
            "trigger_queue_wait_seconds",
            "From a request's created_at to the start of its first attempt.",
            ["pipeline"],
            buckets=WAIT_BUCKETS,
        )
        self.in_flight = made(
            Gauge, "trigger_runs_in_flight", "Run attempts going on now.", ["pipeline"], multiprocess_mode="livesum"
        )


class MetricsObserver:
    """Counts what `Outcomes` recorded; keeps this process's attempts in flight to time them."""

    def __init__(
        self, metrics: WorkerMetrics, pipelines: Iterable[str], clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.m = metrics
        self.pipelines = frozenset(pipelines)
        self.clock = clock
        self._running: dict[str, tuple[str, float]] = {}
        """Request id -> (pipeline label, clock at the attempt's start), for attempts this process started."""

    def recorded(self, step: Step) -> None:
        """Count the step; a `running` one starts an attempt, any other ends the attempt in flight, if any."""
        try:
            self._recorded(step)
        except Exception as exc:  # noqa: BLE001 - the step is recorded; a metric must never undo that
            _failed(exc)

    def refused(self, step: Step) -> None:
        """This process lost the request (fenced, or it ended elsewhere): its attempt is no longer in flight."""
        try:
            self._stopped(step.state.request_id, None)
        except Exception as exc:  # noqa: BLE001 - see `recorded`
            _failed(exc)

    def ended_early(self, state: RequestState) -> None:
        """A duplicate or superseded request ended on arrival."""
        try:
            self.m.requests.labels(pipeline_label(state.pipeline_name, self.pipelines), state.status.value).inc()
        except Exception as exc:  # noqa: BLE001 - see `recorded`
            _failed(exc)

    def _recorded(self, step: Step) -> None:
        state = step.state
        pipeline = pipeline_label(state.pipeline_name, self.pipelines)
        if state.status is Status.RUNNING:
            self._started(state, pipeline)
        else:
            self._stopped(state.request_id, state.status.value)
        if state.status.terminal:
            self.m.requests.labels(pipeline, state.status.value).inc()
        if step.next_attempt is not None:
            self.m.retries.labels(pipeline).inc()
        if step.letter is not None:
            self.m.dead_letters.labels(pipeline).inc()

    def _started(self, state: RequestState, pipeline: str) -> None:
        if state.request_id in self._running:  # the run id recorded mid-run: the same attempt
            return
        self._running[state.request_id] = (pipeline, self.clock())
        self.m.attempts.labels(pipeline).inc()
        self.m.in_flight.labels(pipeline).inc()
        if state.attempts == 1 and state.started_at is not None:
            waited = (state.started_at - state.created_at).total_seconds()
            self.m.queue_wait.labels(pipeline).observe(max(0.0, waited))

    def _stopped(self, request_id: str, status: str | None) -> None:
        """End the attempt in flight for `request_id`; time it under `status` (None: not timed)."""
        started = self._running.pop(request_id, None)
        if started is None:
            return
        pipeline, at = started
        self.m.in_flight.labels(pipeline).dec()
        if status is not None:
            self.m.run_duration.labels(pipeline, status).observe(self.clock() - at)


def _failed(exc: Exception) -> None:
    """A metric update failed (the metrics directory gone, a full disk): say so; the request is unaffected."""
    get_logger().warning("trigger.metrics_failed", error=f"{type(exc).__name__}: {exc}")


_shared: WorkerMetrics | None = None


def shared_metrics() -> WorkerMetrics:
    """This process's metrics, made once (a prefork child inherits them; the values reset on fork)."""
    global _shared
    if _shared is None:
        _shared = WorkerMetrics()
    return _shared


def observer_for(settings: WorkerSettings, pipelines: Iterable[str]) -> Observer:
    """The metrics observer, or one that does nothing when metrics are off (`TRIGGER_METRICS_PORT=0`)."""
    if settings.metrics_port == 0:
        return Unobserved()
    return MetricsObserver(shared_metrics(), pipelines)
