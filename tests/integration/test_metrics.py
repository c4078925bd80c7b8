"""The worker's metrics endpoint on a real prefork worker: two children's figures summed by the main process."""

from __future__ import annotations

import socket
import urllib.request

from prometheus_client.parser import text_string_to_metric_families

from producers.stats import read_stats
from tests.integration.conftest import Stack
from tests.support.waiting import wait_for


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of the endpoint, by (name, sorted labels)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples: dict, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_a_prefork_worker_serves_what_all_its_children_recorded(stack: Stack) -> None:
    port = free_port()
    stack.start_worker(
        "prefork",
        pool="prefork",
        TRIGGER_CONCURRENCY="2",
        TRIGGER_METRICS_PORT=str(port),
        TRIGGER_METRICS_HOST="127.0.0.1",
    )
    client = stack.client
    slow = [client.trigger("slow_pipeline", parameters={"seconds": 6}) for _ in range(2)]
    assert wait_for(lambda: read_stats(stack.redis, stack.queue).leases_held == 2), "condition not met in time"
    during = scrape(port)  # each child runs one: only the sum across children makes 2
    rejected = [client.trigger("slow_pipeline", steps={"no_such_step": {"x": 1}}) for _ in range(3)]
    failed = client.trigger("failing_pipeline")
    states = stack.wait_all([*slow, *rejected, failed])
    assert [states[r].status.value for r in slow] == ["succeeded", "succeeded"], stack.logs()
    after = scrape(port)

    assert value(during, "trigger_runs_in_flight", pipeline="slow_pipeline") == 2
    assert value(during, "trigger_leases_held") == 2
    assert value(after, "trigger_runs_in_flight", pipeline="slow_pipeline") == 0
    assert value(after, "trigger_requests_total", pipeline="slow_pipeline", status="succeeded") == 2
    assert value(after, "trigger_requests_total", pipeline="slow_pipeline", status="rejected") == 3
    assert value(after, "trigger_requests_total", pipeline="failing_pipeline", status="failed") == 1
    assert value(after, "trigger_requests_total", pipeline="other", status="rejected") == 1  # the readiness probe
    assert value(after, "trigger_attempts_total", pipeline="slow_pipeline") == 2
    assert value(after, "trigger_dead_letters_total", pipeline="slow_pipeline") == 3
    assert value(after, "trigger_run_duration_seconds_count", pipeline="slow_pipeline", status="succeeded") == 2
    assert value(after, "trigger_run_duration_seconds_sum", pipeline="slow_pipeline", status="succeeded") >= 12
    assert value(after, "trigger_queue_wait_seconds_count", pipeline="slow_pipeline") == 2
    assert value(after, "trigger_dead_letter_store_size") == 5  # the probe, three rejected, one failed
    assert value(after, "trigger_queue_depth", queue=stack.queue) == 0
    assert value(after, "trigger_leases_held") == 0

    stats = read_stats(stack.redis, stack.queue)  # the same counts, kept in Redis for the whole cluster
    assert stats.outcomes == {
        "failing_pipeline": {"failed": 1},
        "other": {"rejected": 1},
        "slow_pipeline": {"rejected": 3, "succeeded": 2},
    }
