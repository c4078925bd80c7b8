"""Producer enqueue cost next to a raw redis-py LPUSH of the same envelope, on the same Redis, in one run.

Three modes, interleaved in rounds so drift (CPU frequency, Redis memory growth) hits them alike:

* ``trigger``: ``TriggerClient.trigger()`` end to end (model build, encode, envelope, state + LPUSH transaction);
* ``send``:    ``TriggerClient.send()`` of requests built beforehand;
* ``raw``:     ``redis.Redis.lpush(queue, envelope)`` of the envelope text ``send`` would push for those requests.

Prints one JSON object: rate and latency percentiles per mode, and the producer/raw ratios (target: within 2x).
Only the queue list and the state keys this run wrote are deleted afterwards.

    python benchmarks/enqueue.py [--count 20000] [--rounds 5] [--redis-url redis://127.0.0.1:6379/14]
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
import statistics
import time
from collections.abc import Callable
from typing import Any

import redis

from producers import keys
from producers.client import TriggerClient
from producers.contract import TriggerRequest, encode_request, normalize_steps
from producers.envelope import task_envelope
from producers.settings import ProducerSettings

PIPELINE = "training_pipeline"
PARAMETERS = {"data_url": "s3://example-bucket/data.csv"}
STEPS = {"train_model": {"model_type": "gradient_boosting"}}
SOURCE = "bench-enqueue"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=20_000, help="Timed messages per mode (default: %(default)s).")
    parser.add_argument("--warmup", type=int, default=1_000, help="Untimed messages per mode first (default: %(default)s).")
    parser.add_argument("--rounds", type=int, default=5, help="Interleaved rounds the count is split into (default: %(default)s).")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/14", help="Redis to enqueue onto (default: %(default)s).")
    parser.add_argument("--queue", default="bench-enqueue", help="Queue (Redis list) name (default: %(default)s).")
    args = parser.parse_args()
    if args.count < args.rounds or args.rounds < 1:
        parser.error("--count must be at least --rounds, and --rounds at least 1")
    return args


def build_request(index: int) -> TriggerRequest:
    """What `trigger()` builds for the same arguments."""
    return TriggerRequest(
        pipeline_name=PIPELINE, parameters=dict(PARAMETERS), steps=normalize_steps(STEPS),
        idempotency_key=f"bench:{index}", source=SOURCE,
    )


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile of already sorted values."""
    index = min(len(sorted_values) - 1, max(0, round(q / 100 * len(sorted_values) + 0.5) - 1))
    return sorted_values[index]


def summarize(latencies_ns: list[int], elapsed_s: float) -> dict[str, float]:
    values = sorted(ns / 1000 for ns in latencies_ns)
    return {
        "count": len(values),
        "rate_per_s": round(len(values) / elapsed_s, 1),
        "mean_us": round(statistics.fmean(values), 2),
        "p50_us": round(percentile(values, 50), 2),
        "p90_us": round(percentile(values, 90), 2),
        "p99_us": round(percentile(values, 99), 2),
        "max_us": round(values[-1], 2),
    }


def timed(calls: list[Callable[[], Any]], latencies: list[int]) -> float:
    """Run each call, appending its latency in ns; return the loop's wall time in seconds."""
    clock = time.perf_counter_ns
    start = clock()
    for call in calls:
        t0 = clock()
        call()
        latencies.append(clock() - t0)
    return (clock() - start) / 1e9


def main() -> None:
    args = parse_args()
    settings = ProducerSettings(queue=args.queue, redis_url=args.redis_url)
    client = TriggerClient.from_settings(settings)
    raw = redis.Redis.from_url(args.redis_url)
    raw.ping()
    if raw.exists(args.queue):
        raise SystemExit(f"queue list {args.queue!r} already exists on {args.redis_url}; refusing to mix runs")

    request_ids: list[str] = []
    counter = iter(range(10**9))

    def trigger_call() -> None:
        index = next(counter)
        request_ids.append(
            client.trigger(PIPELINE, parameters=PARAMETERS, steps=STEPS, idempotency_key=f"bench:{index}", source=SOURCE)
        )

    def send_calls(n: int) -> list[Callable[[], Any]]:
        requests = [build_request(next(counter)) for _ in range(n)]
        request_ids.extend(r.request_id for r in requests)
        return [lambda r=r: client.send(r) for r in requests]

    def raw_calls(n: int) -> list[Callable[[], Any]]:
        requests = [build_request(next(counter)) for _ in range(n)]
        envelopes = [
            task_envelope(keys.TASK_NAME, r.request_id, [encode_request(r)], settings.queue) for r in requests
        ]
        return [lambda e=e: raw.lpush(settings.queue, e) for e in envelopes]

    sample = build_request(-1)
    envelope_bytes = len(task_envelope(keys.TASK_NAME, sample.request_id, [encode_request(sample)], settings.queue))

    try:
        # Warm-up: connections, pydantic/JSON code paths, Redis allocations.
        timed([trigger_call] * args.warmup, [])
        timed(send_calls(args.warmup), [])
        timed(raw_calls(args.warmup), [])

        latencies: dict[str, list[int]] = {"trigger": [], "send": [], "raw_lpush": []}
        elapsed = dict.fromkeys(latencies, 0.0)
        per_round = [args.count // args.rounds + (1 if i < args.count % args.rounds else 0) for i in range(args.rounds)]
        for round_index, n in enumerate(per_round):
            plans = {"trigger": [trigger_call] * n, "send": send_calls(n), "raw_lpush": raw_calls(n)}
            order = list(plans)
            shift = round_index % len(order)
            for mode in order[shift:] + order[:shift]:
                gc.collect()
                elapsed[mode] += timed(plans[mode], latencies[mode])

        results = {mode: summarize(latencies[mode], elapsed[mode]) for mode in latencies}
        raw_result = results["raw_lpush"]
        ratios = {
            f"{mode}_vs_raw": {
                "p50": round(results[mode]["p50_us"] / raw_result["p50_us"], 2),
                "mean": round(results[mode]["mean_us"] / raw_result["mean_us"], 2),
                "p99": round(results[mode]["p99_us"] / raw_result["p99_us"], 2),
            }
            for mode in ("trigger", "send")
        }
        queue_length = raw.llen(settings.queue)
    finally:
        raw.delete(settings.queue)
        for start in range(0, len(request_ids), 1000):
            raw.delete(*(keys.state_key(rid) for rid in request_ids[start : start + 1000]))

    print(json.dumps({
        "benchmark": "enqueue",
        "redis_url": args.redis_url,
        "queue": args.queue,
        "count_per_mode": args.count,
        "warmup_per_mode": args.warmup,
        "rounds": args.rounds,
        "envelope_bytes": envelope_bytes,
        "queue_length_after": queue_length,
        "python": platform.python_version(),
        "redis_py": redis.__version__,
        "redis_server": raw.info("server").get("redis_version"),
        "results": results,
        "ratios_producer_over_raw": ratios,
        "target_ratio": 2.0,
        "send_within_target": ratios["send_vs_raw"]["p50"] <= 2.0 and ratios["send_vs_raw"]["mean"] <= 2.0,
        "trigger_within_target": ratios["trigger_vs_raw"]["p50"] <= 2.0 and ratios["trigger_vs_raw"]["mean"] <= 2.0,
    }, indent=2))


if __name__ == "__main__":
    main()
