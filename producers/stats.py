"""Cluster-wide figures, read from Redis: what `trigger stats` prints and the worker's gauges report.

Each figure is one read of a key the workers keep current (no KEYS, no SCAN), all in one pipelined
round trip, so every worker and every terminal sees the same numbers whichever process asks.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

import redis

from producers import keys
from producers.priority import queue_lists

NEXT_RETRIES = 5
"""How many of the soonest scheduled attempts a reading lists."""

OTHER_PIPELINE = "other"
"""The pipeline label of a request that names no pipeline the worker registers (an unknown name, a
template not yet resolved, an unreadable payload), so the label's values stay bounded."""


def pipeline_label(name: str | None, registered: Iterable[str]) -> str:
    """The pipeline a figure is counted under: the registered name, else `OTHER_PIPELINE`."""
    return name if name is not None and name in registered else OTHER_PIPELINE


def outcome_field(pipeline: str, status: str) -> str:
    """The field of `keys.outcome_counts_key` counting `pipeline`'s requests that ended in `status`."""
    return f"{status}:{pipeline}"


def parse_outcomes(raw: dict[bytes, bytes]) -> dict[str, dict[str, int]]:
    """`{pipeline: {status: count}}` from the outcome hash (a status never holds `:`, a pipeline may)."""
    outcomes: dict[str, dict[str, int]] = {}
    for name, count in raw.items():
        status, _, pipeline = name.decode().partition(":")
        outcomes.setdefault(pipeline, {})[status] = int(count)
    return {pipeline: dict(sorted(counts.items())) for pipeline, counts in sorted(outcomes.items())}


@dataclass(frozen=True)
class ClusterStats:
    """One reading of the figures every worker of a queue shares."""

    queue: str
    read_at: float
    queue_depth: int
    """Messages on the Celery queue (its Redis list and kombu's priority lists), not yet taken by a worker."""
    waiting: int
    """Requests enqueued that no worker has taken on yet (the queue plus messages prefetched or in flight)."""
    retry_scheduled: int
    next_retry_at: float | None
    dead_letters: int
    dead_letter_bytes: int
    leases_held: int
    """Requests a live worker is working on now (all queues of this Redis)."""
    outcomes: dict[str, dict[str, int]] = field(default_factory=dict)
    depth_by_priority: dict[int, int] = field(default_factory=dict)
    """The queue depth by priority (0 is the queue's own list), the non-empty lists only."""
    retry_overdue: int = 0
    """Scheduled attempts already due: only a worker releases them, so a growing count means none runs."""
    next_retries: list[tuple[str, float]] = field(default_factory=list)
    """The first few scheduled attempts: (request id, due epoch seconds), soonest first."""

    def totals(self) -> dict[str, int]:
        """Requests by terminal status, all pipelines together."""
        totals: dict[str, int] = {}
        for counts in self.outcomes.values():
            for status, count in counts.items():
                totals[status] = totals.get(status, 0) + count
        return dict(sorted(totals.items()))

    def as_dict(self) -> dict[str, Any]:
        """The JSON object `trigger stats --json` prints."""
        return {**asdict(self), "totals": self.totals()}


def read_stats(client: redis.Redis, queue: str, clock: Callable[[], float] = time.time) -> ClusterStats:
    """Read every figure of `queue` in one pipelined round trip."""
    now = clock()
    pipe = client.pipeline(transaction=False)
    for name in queue_lists(queue):
        pipe.llen(name)
    pipe.zcard(keys.waiting_key(queue))
    pipe.zcard(keys.retry_schedule_key(queue))
    pipe.zrange(keys.retry_schedule_key(queue), 0, NEXT_RETRIES - 1, withscores=True)
    pipe.zcount(keys.retry_schedule_key(queue), "-inf", now)
    pipe.zcard(keys.DEAD_LETTERS_KEY)
    pipe.get(keys.DEAD_LETTER_BYTES_KEY)
    pipe.zcount(keys.LEASES_KEY, now, "+inf")
    pipe.hgetall(keys.outcome_counts_key(queue))
    *depths, waiting, scheduled, first, overdue, letters, letter_bytes, leases, outcomes = pipe.execute()
    return ClusterStats(
        queue=queue,
        read_at=now,
        queue_depth=sum(depths),
        waiting=waiting,
        retry_scheduled=scheduled,
        next_retry_at=first[0][1] if first else None,
        dead_letters=letters,
        dead_letter_bytes=int(letter_bytes or 0),
        leases_held=leases,
        outcomes=parse_outcomes(outcomes),
        depth_by_priority={n: depth for n, depth in enumerate(depths) if depth},
        retry_overdue=overdue,
        next_retries=[(envelope_id(envelope), due) for envelope, due in first],
    )


def envelope_id(envelope: bytes) -> str:
    """The request id of a scheduled task envelope (its task id), or `?` for one that does not read."""
    try:
        return str(json.loads(envelope)["headers"]["id"])
    except (ValueError, KeyError, TypeError):
        return "?"
