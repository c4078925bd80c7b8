"""What the trigger worker adds around a pipeline run, measured on a real `trigger worker --pool solo`.

(a) Rejection drain rate: N requests that fail validation (an unknown step) appear on the queue at once
    (see `support.enqueue_at_once`) while an already warm worker waits; the rate is taken from the
    workers' own `finished_at` stamps, first to last terminal state, so polling granularity does not count.
(b) Enqueue -> first step: valid `training_pipeline` requests sent one at a time (each waits for the
    previous to finish); for each, the `load_data` step's start time from ZenML minus the request's
    `created_at`, split into the worker's part (`started_at - created_at`) and ZenML's part (the rest).

The worker is started before anything is measured and is ready once a probe request is rejected, so its
start-up is excluded; the first valid run(s) are reported apart as warm-up (ZenML creates its store then).
The Redis db given is flushed before and after. Prints one JSON object.

    python benchmarks/worker_overhead.py [--invalid 1000] [--valid 5] [--redis-url redis://127.0.0.1:6379/14]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from support import (
    WorkerProcess,
    dedicated_redis,
    describe_ms,
    drain_figures,
    enqueue_at_once,
    finish_workdir,
    trigger_worker_env,
    venv_command,
    wait_terminal,
)

from producers.client import TriggerClient
from producers.contract import TriggerRequest, normalize_steps
from producers.settings import ProducerSettings
from producers.state import RequestState, Status

PIPELINE = "training_pipeline"
FIRST_STEP = "load_data"
INVALID_STEPS = {"no_such_step": {"x": 1}}
QUICK_STEPS = {"load_data": {"n_samples": 200}, "train_model": {"n_estimators": 10}}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add = parser.add_argument
    add("--invalid", type=int, default=1000, help="(a) invalid requests to drain; 0 skips (a) (default: %(default)s)")
    add("--valid", type=int, default=5, help="(b) measured valid runs; 0 skips (b) (default: %(default)s)")
    add("--warmup-runs", type=int, default=1, help="(b) valid runs first, reported apart (default: %(default)s)")
    add("--redis-url", default="redis://127.0.0.1:6379/14", help="dedicated Redis db, flushed (default: %(default)s)")
    add("--queue", default="bench-worker-overhead", help="queue name (default: %(default)s)")
    add("--timeout", type=float, default=300, help="seconds to wait for any one phase (default: %(default)s)")
    add("--keep-logs", action="store_true", help="keep the temp dir with the worker log and ZenML store")
    args = parser.parse_args()
    if min(args.invalid, args.valid, args.warmup_runs) < 0 or args.invalid == 1:
        parser.error("counts must be >= 0, and --invalid 0 or at least 2 (a first-to-last span needs two)")
    return args


def as_utc(moment: datetime) -> datetime:
    """ZenML stores naive UTC datetimes; the contract's are aware."""
    return moment.replace(tzinfo=timezone.utc) if moment.tzinfo is None else moment


def ms_between(start: datetime, end: datetime) -> float:
    return (as_utc(end) - as_utc(start)).total_seconds() * 1000


def wait_ready(client: TriggerClient, worker: WorkerProcess, timeout: float) -> float:
    """Send one invalid request and wait for its terminal state; return seconds taken."""
    started = time.monotonic()
    probe = client.trigger(PIPELINE, steps=INVALID_STEPS, source="bench-readiness-probe")
    wait_terminal(client.redis, [probe], timeout, worker, poll=0.1)
    return time.monotonic() - started


def rejection_drain(client: TriggerClient, worker: WorkerProcess, count: int, timeout: float) -> dict[str, Any]:
    requests = [
        TriggerRequest(pipeline_name=PIPELINE, steps=normalize_steps(INVALID_STEPS), source="bench-invalid")
        for _ in range(count)
    ]
    rejected_before = worker.count_events("trigger.rejected")
    enqueued_at = enqueue_at_once(client, requests)
    states = wait_terminal(client.redis, [r.request_id for r in requests], timeout, worker)
    finished = sorted(state.finished_at.timestamp() for state in states.values() if state.finished_at)
    time.sleep(0.2)  # let the last log line reach the file
    figures: dict[str, Any] = {
        "requests": count,
        "invalid_because": "unknown step 'no_such_step' (validation against the pipeline signature)",
        "statuses": dict(Counter(state.status.value for state in states.values())),
        "rejected_events_logged": worker.count_events("trigger.rejected") - rejected_before,
    }
    if len(finished) >= 2:
        figures["first_to_last_terminal"] = drain_figures(len(finished) - 1, finished[-1] - finished[0])
    if finished:
        figures["enqueue_to_last_terminal"] = drain_figures(len(finished), finished[-1] - enqueued_at)
    return figures


def run_valid(client: TriggerClient, worker: WorkerProcess, timeout: float) -> RequestState:
    request = TriggerRequest(pipeline_name=PIPELINE, steps=normalize_steps(QUICK_STEPS), source="bench-valid")
    client.send(request)
    return wait_terminal(client.redis, [request.request_id], timeout, worker, poll=0.05)[request.request_id]


def first_step_start(run_id: str) -> datetime | None:
    from zenml.client import Client

    step = Client().get_pipeline_run(run_id).steps[FIRST_STEP]
    return step.start_time


def timings(state: RequestState) -> dict[str, Any]:
    """The split of one valid request's path to its first step."""
    head = {"request_id": state.request_id, "status": state.status.value}
    if state.status is not Status.SUCCEEDED or not state.run_id or not state.started_at:
        return {**head, "error": state.error and state.error.message}
    step_start = first_step_start(state.run_id)
    if step_start is None:
        return {**head, "error": f"{FIRST_STEP} has no start_time"}
    return {
        **head,
        "enqueue_to_first_step_ms": ms_between(state.created_at, step_start),
        "enqueue_to_worker_start_ms": ms_between(state.created_at, state.started_at),
        "worker_start_to_first_step_ms": ms_between(state.started_at, step_start),
        "enqueue_to_terminal_ms": ms_between(state.created_at, state.finished_at or state.updated_at),
    }


def first_step_latency(client: TriggerClient, worker: WorkerProcess, args: argparse.Namespace) -> dict[str, Any]:
    warmup = [run_valid(client, worker, args.timeout) for _ in range(args.warmup_runs)]
    measured = [run_valid(client, worker, args.timeout) for _ in range(args.valid)]
    rows = [timings(state) for state in measured]
    good = [row for row in rows if "enqueue_to_first_step_ms" in row]
    result: dict[str, Any] = {
        "runs": args.valid,
        "succeeded": len(good),
        "step": FIRST_STEP,
        "step_parameters": QUICK_STEPS,
        "warmup_runs": [
            {k: round(v, 1) if isinstance(v, float) else v for k, v in timings(state).items()} for state in warmup
        ],
    }
    for field in (
        "enqueue_to_first_step_ms",
        "enqueue_to_worker_start_ms",
        "worker_start_to_first_step_ms",
        "enqueue_to_terminal_ms",
    ):
        if good:
            result[field.removesuffix("_ms")] = describe_ms([row[field] for row in good])
    failures = [row for row in rows if "enqueue_to_first_step_ms" not in row]
    if failures:
        result["failures"] = failures
    return result


def main() -> None:
    args = parse_args()
    redis_client = dedicated_redis(args.redis_url)
    workdir = Path(tempfile.mkdtemp(prefix="bench-worker-overhead-"))
    zenml_path = workdir / "zenml"
    zenml_path.mkdir()
    os.environ["ZENML_CONFIG_PATH"] = str(zenml_path)  # this process reads the worker's runs from the same store
    os.environ["ZENML_ANALYTICS_OPT_IN"] = "false"
    settings = ProducerSettings(redis_url=args.redis_url, queue=args.queue, enqueue_timeout=2)
    client = TriggerClient.from_settings(settings)
    command = [venv_command("trigger"), "worker", "--pool", "solo"]
    env = trigger_worker_env(args.redis_url, args.queue, zenml_path)
    output: dict[str, Any] = {
        "benchmark": "worker_overhead",
        "redis_url": args.redis_url,
        "queue": args.queue,
        "worker_command": " ".join(["trigger", *command[1:]]),
    }
    failed = False
    try:
        with WorkerProcess(command, env, workdir / "worker.log") as worker:
            output["worker_ready_s"] = round(wait_ready(client, worker, args.timeout), 2)
            if args.invalid:
                output["rejection_drain"] = rejection_drain(client, worker, args.invalid, args.timeout)
            if args.valid:
                output["time_to_first_step"] = first_step_latency(client, worker, args)
            output["worker_exit_code"] = worker.stop()
    except BaseException:
        failed = True
        raise
    finally:
        redis_client.flushdb()
        kept = finish_workdir(workdir, args.keep_logs, failed)
        if kept:
            output["workdir"] = kept
    print(json.dumps(output, indent=2))


if __name__ == "__main__":
    main()
