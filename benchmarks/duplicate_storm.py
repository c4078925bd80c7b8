"""Deduplication under a storm, next to a bare Celery no-op task, on the same Redis in the same run.

Trigger side: N requests sharing one idempotency key are enqueued with `TriggerClient.send` before a real
`trigger worker --pool solo` starts. The first runs `training_pipeline` (with small step parameters); the
other N-1 end `duplicate`. Their drain rate is N-1 over the span from the first request's terminal state to
the last duplicate's (the workers' own `finished_at` stamps), so worker start-up and the pipeline run do
not count.

Baseline: N no-op tasks (`benchmarks/noop_app.py`: the trigger worker's Celery settings, stock transport)
are sent with `app.send_task` before `celery -A benchmarks.noop_app worker --pool solo` starts; each
records its completion time, and the rate is N-1 over the span from the first completion to the last.

The same storm with one coalescing key instead (the newest request runs, the others end `coalesced`) is
measured the same way, as `trigger_coalescing`.

A duplicate or superseded request is ended as its message arrives, in one Redis call, before Celery makes
a task of it (`worker/early.py`); a no-op task goes through all of Celery's per-task work (receive, run,
acknowledge), which is why the ratio can be above 1.

The workers run one after the other, alone, with Celery at the same log level. The Redis db given is
flushed before and after. Prints one JSON object.

    python benchmarks/duplicate_storm.py [--count 1000] [--redis-url redis://127.0.0.1:6379/15]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import noop_app
import redis
from celery import Celery
from support import (
    WorkerProcess,
    dedicated_redis,
    drain_figures,
    finish_workdir,
    trigger_worker_env,
    venv_command,
    wait_terminal,
    worker_env,
)

from producers.client import TriggerClient
from producers.contract import TriggerRequest, normalize_steps
from producers.settings import ProducerSettings

PIPELINE = "training_pipeline"
QUICK_STEPS = {"load_data": {"n_samples": 200}, "train_model": {"n_estimators": 10}}
CELERY_LOGLEVEL = "INFO"  # what `trigger worker` passes to Celery


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add = parser.add_argument
    add("--count", type=int, default=1000, help="requests in the storm, and no-op tasks (default: %(default)s)")
    add("--redis-url", default="redis://127.0.0.1:6379/15", help="dedicated Redis db, flushed (default: %(default)s)")
    add("--queue", default="bench-storm", help="trigger queue name (default: %(default)s)")
    add("--noop-queue", default="bench-noop", help="no-op task queue name (default: %(default)s)")
    add("--timeout", type=float, default=300, help="seconds to wait for either drain (default: %(default)s)")
    add("--keep-logs", action="store_true", help="keep the temp dir with the worker logs and ZenML store")
    args = parser.parse_args()
    if args.count < 3:
        parser.error("--count must be at least 3")
    return args


def trigger_storm(args: argparse.Namespace, workdir: Path, field: str = "idempotency_key") -> dict[str, Any]:
    """N requests sharing one `field` key: one runs, the others end `duplicate` (or `coalesced`)."""
    settings = ProducerSettings(redis_url=args.redis_url, queue=args.queue, enqueue_timeout=2)
    client = TriggerClient.from_settings(settings)
    key = f"bench-storm:{uuid.uuid4().hex}"
    steps = normalize_steps(QUICK_STEPS)
    requests = [
        TriggerRequest(pipeline_name=PIPELINE, steps=steps, source="bench-storm", **{field: key})
        for _ in range(args.count)
    ]
    started = time.perf_counter()
    for request in requests:
        client.send(request)
    send_s = time.perf_counter() - started

    zenml_path = workdir / "zenml"
    zenml_path.mkdir(parents=True)
    command = [venv_command("trigger"), "worker", "--pool", "solo"]
    env = trigger_worker_env(args.redis_url, args.queue, zenml_path)
    with WorkerProcess(command, env, workdir / "trigger-worker.log") as worker:
        states = wait_terminal(client.redis, [r.request_id for r in requests], args.timeout, worker, poll=0.25)
        exit_code = worker.stop()

    ran = requests[0] if field == "idempotency_key" else requests[-1]  # the first runs; when coalescing, the last
    first = states[ran.request_id]
    duplicates = [states[r.request_id] for r in requests if r is not ran]
    finished = sorted(s.finished_at.timestamp() for s in duplicates if s.finished_at)
    figures: dict[str, Any] = {
        "requests": args.count,
        "enqueue_s": round(send_s, 3),
        "first_request": {
            "status": first.status.value,
            "run_seconds": round((first.finished_at - first.started_at).total_seconds(), 2)
            if first.finished_at and first.started_at
            else None,
            "error": first.error and first.error.message,
        },
        "duplicate_statuses": dict(Counter(s.status.value for s in duplicates)),
        "covered_by_the_run": sum(first.request_id in (s.duplicate_of, s.coalesced_into) for s in duplicates),
        "worker_command": " ".join(["trigger", *command[1:]]),
        "worker_exit_code": exit_code,
    }
    if first.finished_at and finished and field == "idempotency_key":
        figures["duplicates_drain"] = drain_figures(len(finished), finished[-1] - first.finished_at.timestamp())
    if len(finished) >= 2:
        figures["first_to_last_duplicate"] = drain_figures(len(finished) - 1, finished[-1] - finished[0])
    return figures


def noop_storm(args: argparse.Namespace, workdir: Path, client: redis.Redis) -> dict[str, Any]:
    app = Celery("bench_noop_producer", broker=args.redis_url, set_as_current=False)
    app.conf.update(noop_app.config(args.redis_url, args.noop_queue))
    done_key = f"{args.noop_queue}:done"
    started = time.perf_counter()
    with app.producer_or_acquire() as producer:
        for _ in range(args.count):
            app.send_task(noop_app.TASK_NAME, producer=producer)
    send_s = time.perf_counter() - started
    queued = client.llen(args.noop_queue)

    command = [
        venv_command("celery"),
        "-A",
        "benchmarks.noop_app",
        "worker",
        "--pool",
        "solo",
        "--loglevel",
        CELERY_LOGLEVEL,
    ]
    env = worker_env(
        BENCH_NOOP_BROKER_URL=args.redis_url, BENCH_NOOP_QUEUE=args.noop_queue, BENCH_NOOP_DONE_KEY=done_key
    )
    deadline = time.monotonic() + args.timeout
    with WorkerProcess(command, env, workdir / "noop-worker.log") as worker:
        while client.llen(done_key) < args.count:
            worker.check_alive()
            if time.monotonic() > deadline:
                raise TimeoutError(f"{client.llen(done_key)} of {args.count} no-op tasks done after {args.timeout:g}s")
            time.sleep(0.25)
        exit_code = worker.stop()
    done = sorted(float(stamp) for stamp in client.lrange(done_key, 0, -1))
    return {
        "tasks": args.count,
        "enqueue_s": round(send_s, 3),
        "queued_before_worker_start": queued,
        "completed": len(done),
        "first_to_last_completion": drain_figures(len(done) - 1, done[-1] - done[0]),
        "worker_command": " ".join(["celery", *command[1:]]),
        "worker_exit_code": exit_code,
    }


def main() -> None:
    args = parse_args()
    client = dedicated_redis(args.redis_url)
    workdir = Path(tempfile.mkdtemp(prefix="bench-duplicate-storm-"))
    os.environ["ZENML_ANALYTICS_OPT_IN"] = "false"
    output: dict[str, Any] = {
        "benchmark": "duplicate_storm",
        "redis_url": args.redis_url,
        "celery_loglevel": CELERY_LOGLEVEL,
        "step_parameters": QUICK_STEPS,
    }
    failed = False
    try:
        output["trigger"] = trigger_storm(args, workdir)
        client.flushdb()
        output["trigger_coalescing"] = trigger_storm(args, workdir / "coalescing", "coalesce_key")
        client.flushdb()
        output["noop_celery"] = noop_storm(args, workdir, client)
    except BaseException:
        failed = True
        raise
    finally:
        client.flushdb()
        kept = finish_workdir(workdir, args.keep_logs, failed)
        if kept:
            output["workdir"] = kept

    dedup = output["trigger"].get("duplicates_drain", {}).get("requests_per_s")
    coalesced = output["trigger_coalescing"].get("first_to_last_duplicate", {}).get("requests_per_s")
    noop = output["noop_celery"]["first_to_last_completion"]["requests_per_s"]
    output["summary"] = {
        "duplicate_requests_per_s": dedup,
        "coalesced_requests_per_s": coalesced,
        "noop_tasks_per_s": noop,
        "duplicate_over_noop_rate": round(dedup / noop, 3) if dedup and noop else None,
        "coalesced_over_noop_rate": round(coalesced / noop, 3) if coalesced and noop else None,
        "noop_over_duplicate_rate": round(noop / dedup, 2) if dedup and noop else None,
    }
    print(json.dumps(output, indent=2))


if __name__ == "__main__":
    main()
