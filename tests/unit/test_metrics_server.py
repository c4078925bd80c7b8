"""The worker's metrics endpoint: processes' files summed, exited processes' live gauges dropped, Redis gauges."""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Iterator
from pathlib import Path

import fakeredis
import pytest
import redis
from prometheus_client import CollectorRegistry, generate_latest, values
from prometheus_client.parser import text_string_to_metric_families

from producers import keys
from worker.metrics import WorkerMetrics
from worker.metrics_server import MULTIPROC_ENV, ClusterCollector, ExitedProcesses, MetricsServer
from worker.settings import WorkerSettings


def samples(registry: CollectorRegistry) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = generate_latest(registry).decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


@pytest.fixture
def multiprocess_dir(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The worker's set-up, undone afterwards (the value class is process-wide)."""
    monkeypatch.setattr(values, "ValueClass", values.ValueClass)
    monkeypatch.delenv(MULTIPROC_ENV, raising=False)
    server = MetricsServer.prepare(WorkerSettings(redis_url="redis://unused.invalid:6379/0"))
    assert server is not None
    yield server.path
    server.close()
    os.environ.pop(MULTIPROC_ENV, None)
    assert not server.path.exists()


def child_run(metrics: WorkerMetrics) -> None:
    """A prefork child: one attempt started, killed before it ended (its in-flight gauge never goes down)."""
    metrics.attempts.labels("p").inc()
    metrics.in_flight.labels("p").inc()
    os._exit(0)


def registry_over(path: Path) -> CollectorRegistry:
    from prometheus_client import multiprocess

    registry = CollectorRegistry()
    registry.register(ExitedProcesses(path))
    multiprocess.MultiProcessCollector(registry, str(path))
    return registry


def test_children_are_summed_and_an_exited_childs_run_no_longer_counts_in_flight(multiprocess_dir: Path) -> None:
    metrics = WorkerMetrics()  # made in the main process before the fork, as the worker does
    metrics.in_flight.labels("p").inc()  # the main process has one of its own going
    context = multiprocessing.get_context("fork")
    for _ in range(2):
        child = context.Process(target=child_run, args=(metrics,))
        child.start()
        child.join()
    found = samples(registry_over(multiprocess_dir))
    assert found[("trigger_attempts_total", (("pipeline", "p"),))] == 2
    assert found[("trigger_runs_in_flight", (("pipeline", "p"),))] == 1
    assert [name for name in os.listdir(multiprocess_dir) if name.startswith("gauge_livesum")] == [
        f"gauge_livesum_{os.getpid()}.db"
    ]


def test_metrics_off_prepares_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(MULTIPROC_ENV, raising=False)
    assert MetricsServer.prepare(WorkerSettings(redis_url="redis://unused.invalid:6379/0", metrics_port=0)) is None
    assert MULTIPROC_ENV not in os.environ


def test_the_cluster_gauges_come_from_redis() -> None:
    client = fakeredis.FakeRedis()
    client.lpush("q", "a", "b", "c")
    client.zadd(keys.retry_schedule_key("q"), {"e": 1.0})
    client.zadd(keys.DEAD_LETTERS_KEY, {"x": 1, "y": 2})
    registry = CollectorRegistry()
    registry.register(ClusterCollector(client, "q"))
    found = samples(registry)
    assert found[("trigger_queue_depth", (("queue", "q"),))] == 3
    assert found[("trigger_retry_scheduled", (("queue", "q"),))] == 1
    assert found[("trigger_dead_letter_store_size", ())] == 2
    assert found[("trigger_leases_held", ())] == 0


def test_redis_away_at_scrape_time_leaves_the_gauges_out_instead_of_failing() -> None:
    client = redis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.5)  # nothing listens there
    registry = CollectorRegistry()
    registry.register(ClusterCollector(client, "q"))
    assert samples(registry) == {}
