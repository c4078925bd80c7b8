"""A producer's burst through a Redis failover, and the count of what it was told was enqueued.

The failover test and `benchmarks/failover.py` share it: requests go out one after another; once
`before` of them are enqueued, a second thread SIGKILLs the primary (optionally after the replica
stopped reading for a moment: a replica fallen behind), waits for the sentinels to promote the
replica, and starts the killed server again as the new primary's replica (as an operator's supervisor
would), so that `TRIGGER_ENQUEUE_MIN_REPLICAS=1` can be met again. The producer keeps sending all the
while, and then until `after` more requests were enqueued on the new primary. A request counts as
*lost* when the producer was told it was enqueued and no terminal state is recorded for it on the new
primary in the end.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import dataclass, field

from producers.client import TriggerClient
from producers.errors import EnqueueError
from producers.settings import ProducerSettings
from producers.state import TERMINAL, StateStore
from tests.support.sentinels import SentinelGroup, wait_for

PIPELINE = "no_such_pipeline"
"""Rejected by validation: the worker's whole walk without a ZenML run, a few ms per request."""


@dataclass
class Burst:
    """What the producer saw: the ids it was told were enqueued, how many enqueues failed, and the failover."""

    enqueued: list[str] = field(default_factory=list)
    refused: int = 0
    failover_seconds: float = 0.0
    error: BaseException | None = None


def burst_through_failover(
    group: SentinelGroup, settings: ProducerSettings, before: int, after: int, replica_behind: float = 0
) -> Burst:
    """Send without pause: `before` requests enqueued, then on through the failover, then `after` more.

    With `replica_behind`, the replica stops reading that many seconds before the primary dies,
    while the producer keeps sending.
    """
    burst, reached = Burst(), threading.Event()
    killer = threading.Thread(target=_fail_over, args=(group, reached, burst, replica_behind), daemon=True)
    killer.start()
    client = TriggerClient.from_settings(settings)
    deadline = time.monotonic() + 60
    while len(burst.enqueued) < before and time.monotonic() < deadline:
        _send_one(client, burst)
    reached.set()
    while killer.is_alive() and time.monotonic() < deadline:
        _send_one(client, burst)
    goal = len(burst.enqueued) + after
    while len(burst.enqueued) < goal and time.monotonic() < deadline:
        _send_one(client, burst)
    killer.join(timeout=30)
    if burst.error is not None:
        raise burst.error
    return burst


def _send_one(client: TriggerClient, burst: Burst) -> None:
    try:
        burst.enqueued.append(client.trigger(PIPELINE, source="failover-burst"))
    except EnqueueError:
        burst.refused += 1
        time.sleep(0.02)  # Redis is away: try again shortly rather than spin


def _fail_over(group: SentinelGroup, reached: threading.Event, burst: Burst, replica_behind: float) -> None:
    reached.wait()
    try:
        if replica_behind:
            group.pause_replica()
            time.sleep(replica_behind)
        started = time.monotonic()
        group.kill_primary()
        if replica_behind:
            group.resume_replica()
        group.wait_for_failover()
        burst.failover_seconds = time.monotonic() - started
        group.restart_killed_as_replica()
    except BaseException as exc:  # noqa: BLE001 - handed to the producer's thread, which raises it
        burst.error = exc


def outcomes(settings: ProducerSettings, request_ids: list[str], timeout: float) -> Counter[str]:
    """Each request's status once all are terminal (or at the timeout); `missing` when none is recorded."""
    states = StateStore(TriggerClient.from_settings(settings).redis, settings.state_ttl)

    def statuses() -> Counter[str]:
        found = [states.get(request_id) for request_id in request_ids]
        return Counter("missing" if state is None else state.status.value for state in found)

    def settled() -> bool:
        return all(_terminal(status) for status in statuses())

    try:
        wait_for(settled, timeout, "not every request reached a terminal state")
    except RuntimeError:
        pass
    return statuses()


def lost(counted: Counter[str]) -> int:
    """Requests without a terminal state: missing altogether, or stuck on the way."""
    return sum(number for status, number in counted.items() if not _terminal(status))


def _terminal(status: str) -> bool:
    return status in {terminal.value for terminal in TERMINAL}
