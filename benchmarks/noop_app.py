"""A plain Celery app with one no-op task: the baseline `duplicate_storm.py` compares the trigger worker to.

Its configuration is the trigger worker's own (`worker.app.celery_config`: JSON only, acks_late,
reject on worker loss, prefetch 1, no results, no task events, remote control on, the same transport
options) except the transport, which is kombu's stock Redis one. The task records when it ran by
pushing `time.time()` onto a Redis list (one round trip, like the trigger worker's terminal state
write), so the benchmark can read both the count and the first/last completion time.

    BENCH_NOOP_BROKER_URL=redis://127.0.0.1:6379/15 celery -A benchmarks.noop_app worker --pool solo
"""

from __future__ import annotations

import os
import time
from typing import Any

import redis
from celery import Celery

from worker.app import celery_config
from worker.settings import WorkerSettings

BROKER_URL = os.environ.get("BENCH_NOOP_BROKER_URL", "redis://127.0.0.1:6379/15")
QUEUE = os.environ.get("BENCH_NOOP_QUEUE", "bench-noop")
DONE_KEY = os.environ.get("BENCH_NOOP_DONE_KEY", "bench-noop:done")
TASK_NAME = "bench.noop"


def config(broker_url: str = BROKER_URL, queue: str = QUEUE) -> dict[str, Any]:
    """The trigger worker's Celery settings for this broker and queue, on kombu's stock Redis transport."""
    settings = celery_config(WorkerSettings(redis_url=broker_url, queue=queue))
    del settings["broker_transport"]
    return settings


app = Celery("bench_noop", broker=BROKER_URL, set_as_current=False)
app.conf.update(config())

_client: redis.Redis | None = None


def done_client() -> redis.Redis:
    global _client
    if _client is None:
        _client = redis.Redis.from_url(BROKER_URL)
    return _client


@app.task(name=TASK_NAME, acks_late=True, reject_on_worker_lost=True, ignore_result=True)
def noop() -> None:
    """Do nothing but record the completion time."""
    done_client().rpush(DONE_KEY, repr(time.time()))
