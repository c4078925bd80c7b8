"""What the worker's Prometheus metrics cost on the hot path: drain rate with metrics on and off, same run.

Two warm `trigger worker` processes run side by side on queues of their own, one with metrics on (a free
`TRIGGER_METRICS_PORT`), one with them off (`TRIGGER_METRICS_PORT=0`). Each round puts N requests that fail
validation (an unknown step, as `worker_overhead.py` does) onto one queue at once (`support.enqueue_at_once`)
and waits for them to end, then does the same on the other; the order flips every round, so drift of the
machine's load falls on both alike. A round's rate is taken from the workers' own `finished_at` stamps, first
to last terminal state; besides each mode's median, the on/off ratio of each round (the two drains of a round
ran back to back) is reported. At the end the metrics worker's endpoint is scraped, to show it counted every
request. Then, in this process, two figures that move much less with the machine's load than a drain rate:
the observer's own cost (`MetricsObserver.recorded` for a rejected request's step, in multiprocess mode, next
to the no-op observer metrics off uses), and the whole walk of a rejected request (`Processor.handle` on the
real Redis, no Celery, log lines off) with each observer, in small interleaved batches. The Redis db given
is flushed before and after. Prints one JSON object.

    python benchmarks/metrics_cost.py [--requests 1000] [--rounds 6] [--pool solo] [--cpu 1] [--redis-url redis://127.0.0.1:6379/14]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from support import (
    WorkerProcess,
    dedicated_redis,
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

PIPELINE = "training_pipeline"
INVALID_STEPS = {"no_such_step": {"x": 1}}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add = parser.add_argument
    add("--requests", type=int, default=1000, help="requests per round and mode (default: %(default)s)")
    add("--rounds", type=int, default=6, help="rounds, each draining both modes (default: %(default)s)")
    add("--pool", default="solo", choices=["solo", "prefork"], help="worker pool (default: %(default)s)")
    add("--redis-url", default="redis://127.0.0.1:6379/14", help="dedicated Redis db, flushed (default: %(default)s)")
    add("--cpu", type=int, help="pin both workers to this CPU (taskset), so neither has a core of its own")
    add("--control", action="store_true", help="both workers with metrics off: the pairing's own bias")
    add("--timeout", type=float, default=300, help="seconds to wait for any one round (default: %(default)s)")
    add("--keep-logs", action="store_true", help="keep the temp dir with the worker logs and ZenML store")
    args = parser.parse_args()
    if args.requests < 2 or args.rounds < 1:
        parser.error("--requests at least 2 (a first-to-last span needs two), --rounds at least 1")
    return args


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def client_for(url: str, queue: str) -> TriggerClient:
    return TriggerClient.from_settings(ProducerSettings(redis_url=url, queue=queue, enqueue_timeout=5))


def wait_ready(client: TriggerClient, worker: WorkerProcess, timeout: float) -> None:
    probe = client.trigger(PIPELINE, steps=INVALID_STEPS, source="bench-readiness-probe")
    wait_terminal(client.redis, [probe], timeout, worker, poll=0.1)


def drain(client: TriggerClient, worker: WorkerProcess, count: int, timeout: float) -> dict[str, float]:
    """One round on one worker: `count` invalid requests at once, first to last terminal state."""
    requests = [
        TriggerRequest(pipeline_name=PIPELINE, steps=normalize_steps(INVALID_STEPS), source="bench-metrics")
        for _ in range(count)
    ]
    enqueue_at_once(client, requests)
    states = wait_terminal(client.redis, [r.request_id for r in requests], timeout, worker)
    finished = sorted(s.finished_at.timestamp() for s in states.values() if s.finished_at)
    statuses = {s.status.value for s in states.values()}
    if statuses != {"rejected"}:
        raise RuntimeError(f"expected every request rejected, got {statuses}")
    return drain_figures(len(finished) - 1, finished[-1] - finished[0])


def scrape_rejected(port: int) -> float | None:
    """`trigger_requests_total{pipeline="training_pipeline",status="rejected"}` from the metrics worker."""
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
        text = answer.read().decode()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            wanted = {"pipeline": PIPELINE, "status": "rejected"}
            if sample.name == "trigger_requests_total" and sample.labels == wanted:
                return sample.value
    return None


def observer_cost(calls: int = 100_000, rounds: int = 3) -> dict[str, Any]:
    """Microseconds per recorded step, metrics observer (multiprocess files) against the no-op one."""
    directory = tempfile.mkdtemp(prefix="bench-metrics-observer-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = directory
    from prometheus_client import values

    values.ValueClass = values.get_value_class()
    from producers.state import RequestState, Status
    from worker.metrics import MetricsObserver, WorkerMetrics
    from worker.outcomes import Step, Unobserved

    state = RequestState(request_id="bench", status=Status.QUEUED, pipeline_name=PIPELINE)
    step = Step(state.advance(Status.REJECTED), letter=object())  # type: ignore[arg-type]
    observers = {"metrics_observer": MetricsObserver(WorkerMetrics(), [PIPELINE]), "no_op_observer": Unobserved()}
    timings: dict[str, list[float]] = {name: [] for name in observers}
    for _ in range(rounds):
        for name, observer in observers.items():
            started = time.perf_counter()
            for _ in range(calls):
                observer.recorded(step)
            timings[name].append((time.perf_counter() - started) / calls * 1e6)
    return {f"{name}_us_per_step": round(statistics.median(values_), 2) for name, values_ in timings.items()}


def walk_in_process(redis_url: str, pairs: int = 40, per_batch: int = 50) -> dict[str, Any]:
    """ms per rejected request through `Processor.handle` (real Redis), metrics observer against the no-op one.

    One processor, its observer swapped between batches: two processors would differ by more than
    their observers (the first one built ran slower in an A/A trial, both with the no-op observer).
    Each pair of batches runs back to back (order flipped every pair); the cost is the median of the
    pairs' ratios, so load that comes and goes on a shared machine falls on both halves of a pair.
    """
    from producers.contract import encode_request
    from worker.delivery import Delivery
    from worker.logs import configure_logging
    from worker.metrics import MetricsObserver, WorkerMetrics
    from worker.outcomes import Unobserved
    from worker.processing import Processor
    from worker.runtime import build_services
    from worker.settings import WorkerSettings

    configure_logging("json", "CRITICAL", [])  # no log lines: they would swamp what is compared here
    processor = Processor(build_services(WorkerSettings(redis_url=redis_url, queue="bench-walk")))
    observers = {
        "metrics_observer": MetricsObserver(WorkerMetrics(), processor.s.registry.names()),
        "no_op_observer": Unobserved(),
    }
    timings: dict[str, list[float]] = {name: [] for name in observers}
    for pair in range(pairs):
        for name in observers if pair % 2 == 0 else reversed(list(observers)):
            processor.outcomes.observer = processor.early.observer = observers[name]
            requests = [
                TriggerRequest(pipeline_name=PIPELINE, steps=normalize_steps(INVALID_STEPS), source="bench-walk")
                for _ in range(per_batch)
            ]
            deliveries = [Delivery(raw=encode_request(r), task_id=r.request_id) for r in requests]
            started = time.perf_counter()
            for delivery in deliveries:
                processor.handle(delivery)
            timings[name].append((time.perf_counter() - started) / per_batch * 1000)
    medians = {name: statistics.median(values_) for name, values_ in timings.items()}
    ratios = [on / off for on, off in zip(timings["metrics_observer"], timings["no_op_observer"], strict=True)]
    return {
        "requests_each": pairs * per_batch,
        **{f"{name}_ms_per_request": round(value, 3) for name, value in medians.items()},
        "paired_median_cost_pct": round((statistics.median(ratios) - 1) * 100, 1),
    }


def summary(rounds: list[dict[str, float]]) -> dict[str, Any]:
    rates = [r["requests_per_s"] for r in rounds]
    return {
        "median_requests_per_s": round(statistics.median(rates), 1),
        "median_ms_per_request": round(statistics.median(r["ms_per_request"] for r in rounds), 3),
        "rates_per_round": rates,
    }


def main() -> None:
    args = parse_args()
    redis_client = dedicated_redis(args.redis_url)
    workdir = Path(tempfile.mkdtemp(prefix="bench-metrics-cost-"))
    zenml_path = workdir / "zenml"
    zenml_path.mkdir()
    os.environ["ZENML_ANALYTICS_OPT_IN"] = "false"
    port = free_port()
    modes = {"metrics_on": "0" if args.control else str(port), "metrics_off": "0"}
    command = [venv_command("trigger"), "worker", "--pool", args.pool, "--concurrency", "1"]
    if args.cpu is not None:
        command = ["taskset", "-c", str(args.cpu), *command]
    output: dict[str, Any] = {
        "benchmark": "metrics_cost",
        "redis_url": args.redis_url,
        "requests_per_round": args.requests,
        "rounds": args.rounds,
        "worker_command": " ".join(part if "/" not in part else "trigger" for part in command),
        "invalid_because": "unknown step 'no_such_step' (validation against the pipeline signature)",
    }
    failed = False
    workers: dict[str, WorkerProcess] = {}
    try:
        clients = {mode: client_for(args.redis_url, f"bench-{mode}") for mode in modes}
        for mode, metrics_port in modes.items():
            (zenml_path / mode).mkdir()
            env = trigger_worker_env(
                args.redis_url,
                f"bench-{mode}",
                zenml_path / mode,
                TRIGGER_METRICS_PORT=metrics_port,
                TRIGGER_METRICS_HOST="127.0.0.1",
            )
            workers[mode] = WorkerProcess(command, env, workdir / f"{mode}.log").__enter__()
        for mode in modes:
            wait_ready(clients[mode], workers[mode], args.timeout)
        results: dict[str, list[dict[str, float]]] = {mode: [] for mode in modes}
        for round_ in range(args.rounds):
            order = list(modes) if round_ % 2 == 0 else list(reversed(modes))
            for mode in order:
                results[mode].append(drain(clients[mode], workers[mode], args.requests, args.timeout))
                time.sleep(0.5)
        for mode in modes:
            output[mode] = summary(results[mode])
        on, off = output["metrics_on"]["median_requests_per_s"], output["metrics_off"]["median_requests_per_s"]
        output["on_vs_off_rate"] = round(on / off, 3)
        output["cost_pct"] = round((off / on - 1) * 100, 1)
        ratios = [
            round(a["requests_per_s"] / b["requests_per_s"], 3)
            for a, b in zip(results["metrics_on"], results["metrics_off"], strict=True)
        ]
        output["paired_on_vs_off_per_round"] = ratios
        output["paired_median_on_vs_off"] = round(statistics.median(ratios), 3)
        output["target"] = "metrics on within 5 % of metrics off (cost_pct <= 5)"
        output["control_both_off"] = args.control
        output["metrics_worker_counted_rejected"] = None if args.control else scrape_rejected(port)
        output["metrics_worker_should_count"] = args.rounds * args.requests + 1  # and the readiness probe
        output["worker_exit_codes"] = {mode: worker.stop() for mode, worker in workers.items()}
        cost = observer_cost()
        cost["as_pct_of_a_rejection_metrics_off"] = round(
            cost["metrics_observer_us_per_step"] / (output["metrics_off"]["median_ms_per_request"] * 1000) * 100, 2
        )
        output["observer_cost_in_process"] = cost
        output["walk_in_process"] = walk_in_process(args.redis_url)
    except BaseException:
        failed = True
        raise
    finally:
        for worker in workers.values():
            worker.stop()
        redis_client.flushdb()
        kept = finish_workdir(workdir, args.keep_logs, failed)
        if kept:
            output["workdir"] = kept
    print(json.dumps(output, indent=2))


if __name__ == "__main__":
    main()
