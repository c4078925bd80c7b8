"""Redis Sentinel failover with real processes: the primary is SIGKILLed in the middle of a producer's burst.

With `TRIGGER_ENQUEUE_MIN_REPLICAS=1` every request the producer was told is enqueued reached the
replica first, so after the sentinels promote it each one ends recorded; the same worker process
follows the sentinels to the new primary and keeps going. The loss without it is a figure, measured
by `benchmarks/failover.py`, not asserted here.
"""

from __future__ import annotations

import pytest

from producers.settings import ProducerSettings
from producers.state import Status
from tests.integration.conftest import Stack
from tests.support.failover import PIPELINE, burst_through_failover, lost, outcomes
from tests.support.sentinels import SentinelGroup

pytestmark = pytest.mark.slow

FAST_RECOVERY = {
    "TRIGGER_LEASE_TIMEOUT": "5",
    "TRIGGER_HEARTBEAT_INTERVAL": "1",
    "TRIGGER_LOST_AFTER": "3",
    "TRIGGER_SWEEP_INTERVAL": "1",
}
"""Whatever the worker itself had in flight at the kill is recovered in seconds, not minutes."""


def test_with_one_replica_required_nothing_acknowledged_is_lost_when_the_primary_dies_mid_burst(
    stack: Stack, sentinel_group: SentinelGroup
) -> None:
    stack.redis_url = sentinel_group.url
    stack.env_overrides.update(FAST_RECOVERY)
    worker = stack.start_worker()
    settings = ProducerSettings(redis_url=stack.redis_url, queue=stack.queue, enqueue_min_replicas=1)

    burst = burst_through_failover(sentinel_group, settings, before=150, after=150, replica_behind=0.5)
    counted = outcomes(settings, burst.enqueued, timeout=45)

    assert len(burst.enqueued) >= 300 and burst.refused > 0, "the burst did not go through a failover"
    assert lost(counted) == 0, f"{counted}\n{stack.logs()}"
    assert counted == {Status.REJECTED.value: len(burst.enqueued)}
    assert worker.poll() is None, "the worker exited instead of reconnecting"
    after = stack.client.trigger(PIPELINE, source="after-failover")
    assert stack.wait(after, 20, worker).status is Status.REJECTED
