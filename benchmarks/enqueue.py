"""Producer enqueue cost next to a raw redis-py LPUSH of the same envelope, on the same Redis, in one run.

Modes, interleaved in rounds (rotating the order) so drift hits them alike:

* ``trigger``:   ``TriggerClient.trigger()`` end to end (model build, encode, envelope, state + LPUSH transaction);
* ``send``:      ``TriggerClient.send()`` of requests built beforehand;
* ``raw_lpush``: ``redis.Redis.lpush(queue, envelope)`` of the envelope text ``send`` would push for such requests.

and, to show where ``send``'s time goes, two parts of it on their own:

* ``send_cpu_only``: what ``send`` computes before any I/O (encode, size check, envelope, queued-state JSON);
* ``txn_set_lpush``: the MULTI/SET/LPUSH/EXEC transaction ``send`` executes, with prebuilt bytes.

Prints one JSON object: rate and latency percentiles per mode, and the producer/raw latency ratios
(target: within 2x). Only the queue list and the state keys (and index entries) this run wrote are deleted afterwards.

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
from itertools import count
from typing import Any

import redis

from producers import keys
from producers.client import TriggerClient
from producers.contract import TriggerRequest, check_payload_size, encode_request, normalize_steps
from producers.envelope import task_envelope
from producers.settings import ProducerSettings
from producers.state import RequestState

PIPELINE = "training_pipeline"
PARAMETERS = {"data_url": "s3://example-bucket/data.csv"}
STEPS = {"train_model": {"model_type": "gradient_boosting"}}
SOURCE = "bench-enqueue"
TARGET_RATIO = 2.0


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add = parser.add_argument
    add("--count", type=int, default=20_000, help="timed messages per mode (default: %(default)s)")
    add("--warmup", type=int, default=1_000, help="untimed messages per mode first (default: %(default)s)")
    add("--rounds", type=int, default=5, help="interleaved rounds the count is split into (default: %(default)s)")
    add("--redis-url", default="redis://127.0.0.1:6379/14", help="Redis to enqueue onto (default: %(default)s)")
    add("--queue", default="bench-enqueue", help="queue (Redis list) name (default: %(default)s)")
    args = parser.parse_args()
    if args.rounds < 1 or args.count < args.rounds:
        parser.error("--rounds must be at least 1 and --count at least --rounds")
    return args


def build_request(index: int) -> TriggerRequest:
    """What `trigger()` builds for the same arguments."""
    return TriggerRequest(
        pipeline_name=PIPELINE,
        parameters=dict(PARAMETERS),
        steps=normalize_steps(STEPS),
        idempotency_key=f"bench:{index}",
        source=SOURCE,
    )


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile of already sorted values."""
    rank = max(1, min(len(sorted_values), -(-len(sorted_values) * q // 100)))
    return sorted_values[int(rank) - 1]


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


class Modes:
    """Builds the calls each mode times; remembers every state key written so it can be deleted."""

    def __init__(self, client: TriggerClient, raw: redis.Redis) -> None:
        self.client = client
        self.raw = raw
        self.queue = client.settings.queue
        self.request_ids: list[str] = []
        self.counter = count()

    def _requests(self, n: int) -> list[TriggerRequest]:
        return [build_request(next(self.counter)) for _ in range(n)]

    def _envelope(self, request: TriggerRequest) -> str:
        return task_envelope(keys.TASK_NAME, request.request_id, [encode_request(request)], self.queue)

    def _trigger(self) -> None:
        request_id = self.client.trigger(
            PIPELINE, parameters=PARAMETERS, steps=STEPS, idempotency_key=f"bench:{next(self.counter)}", source=SOURCE
        )
        self.request_ids.append(request_id)

    def trigger(self, n: int) -> list[Callable[[], Any]]:
        return [self._trigger] * n

    def send(self, n: int) -> list[Callable[[], Any]]:
        requests = self._requests(n)
        self.request_ids.extend(r.request_id for r in requests)
        return [lambda r=r: self.client.send(r) for r in requests]

    def raw_lpush(self, n: int) -> list[Callable[[], Any]]:
        envelopes = [self._envelope(r) for r in self._requests(n)]
        return [lambda e=e: self.raw.lpush(self.queue, e) for e in envelopes]

    def _prepare(self, request: TriggerRequest) -> tuple[str, str]:
        payload = encode_request(request)
        check_payload_size(payload, self.client.settings.max_payload_bytes)
        envelope = task_envelope(keys.TASK_NAME, request.request_id, [payload], self.queue)
        return envelope, RequestState.queued(request).to_json()

    def send_cpu_only(self, n: int) -> list[Callable[[], Any]]:
        return [lambda r=r: self._prepare(r) for r in self._requests(n)]

    def _transaction(self, state_key: str, state_json: str, envelope: str) -> None:
        pipe = self.client.redis.pipeline(transaction=True)
        pipe.set(state_key, state_json, ex=self.client.settings.state_ttl)
        pipe.lpush(self.queue, envelope)
        pipe.execute()

    def txn_set_lpush(self, n: int) -> list[Callable[[], Any]]:
        requests = self._requests(n)
        self.request_ids.extend(r.request_id for r in requests)
        prepared = [(keys.state_key(r.request_id), *self._prepare(r)[::-1]) for r in requests]
        return [lambda p=p: self._transaction(*p) for p in prepared]

    def cleanup(self) -> None:
        self.raw.delete(self.queue, keys.waiting_key(self.queue), keys.waiting_messages_key(self.queue))
        for start in range(0, len(self.request_ids), 1000):
            self.raw.delete(*(keys.state_key(rid) for rid in self.request_ids[start : start + 1000]))
            self.raw.zrem(keys.REQUESTS_INDEX_KEY, *self.request_ids[start : start + 1000])


MODES = ("trigger", "send", "raw_lpush", "send_cpu_only", "txn_set_lpush")


def run(args: argparse.Namespace, modes: Modes) -> dict[str, dict[str, float]]:
    for mode in MODES:  # warm-up: connections, pydantic/JSON code paths, Redis allocations
        timed(getattr(modes, mode)(args.warmup), [])
    latencies: dict[str, list[int]] = {mode: [] for mode in MODES}
    elapsed = dict.fromkeys(MODES, 0.0)
    sizes = [args.count // args.rounds + (i < args.count % args.rounds) for i in range(args.rounds)]
    for round_index, n in enumerate(sizes):
        plans = {mode: getattr(modes, mode)(n) for mode in MODES}
        shift = round_index % len(MODES)
        for mode in MODES[shift:] + MODES[:shift]:
            gc.collect()
            elapsed[mode] += timed(plans[mode], latencies[mode])
    return {mode: summarize(latencies[mode], elapsed[mode]) for mode in MODES}


def main() -> None:
    args = parse_args()
    settings = ProducerSettings(queue=args.queue, redis_url=args.redis_url)
    client = TriggerClient.from_settings(settings)
    raw = redis.Redis.from_url(args.redis_url)
    raw.ping()
    if raw.exists(args.queue):
        raise SystemExit(f"queue list {args.queue!r} already exists on {args.redis_url}; refusing to mix runs")
    modes = Modes(client, raw)
    sample = build_request(-1)
    try:
        summaries = run(args, modes)
        queue_length = raw.llen(args.queue)
    finally:
        modes.cleanup()

    base = summaries["raw_lpush"]
    ratios = {
        f"{mode}_vs_raw": {
            stat: round(summaries[mode][f"{stat}_us"] / base[f"{stat}_us"], 2) for stat in ("p50", "mean", "p99")
        }
        for mode in ("trigger", "send")
    }
    print(
        json.dumps(
            {
                "benchmark": "enqueue",
                "redis_url": args.redis_url,
                "queue": args.queue,
                "count_per_mode": args.count,
                "warmup_per_mode": args.warmup,
                "rounds": args.rounds,
                "envelope_bytes": len(modes._envelope(sample)),
                "queue_length_before_cleanup": queue_length,
                "python": platform.python_version(),
                "redis_py": redis.__version__,
                "redis_server": raw.info("server").get("redis_version"),
                "results": {mode: summaries[mode] for mode in ("trigger", "send", "raw_lpush")},
                "ratios_producer_over_raw": ratios,
                "target_ratio": TARGET_RATIO,
                "within_target": {
                    mode: ratios[f"{mode}_vs_raw"]["p50"] <= TARGET_RATIO
                    and ratios[f"{mode}_vs_raw"]["mean"] <= TARGET_RATIO
                    for mode in ("trigger", "send")
                },
                "send_breakdown": {mode: summaries[mode] for mode in ("send_cpu_only", "txn_set_lpush")},
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
