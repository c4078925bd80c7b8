"""Bytes a rejected request leaves in Redis (its state plus its dead letter), next to the bytes it arrived as.

Runs the real processor in-process against a dedicated Redis db (no Celery, no ZenML run:
every request here is rejected before a run exists) and reads Redis's own accounting
(`MEMORY USAGE` per key, and `used_memory` before and after for the shared indexes).

    python benchmarks/rejected_footprint.py [--redis-url redis://127.0.0.1:6379/15] [--count 500]
"""

from __future__ import annotations

import argparse
import base64
import json
import os
from typing import Any

import redis
from support import dedicated_redis

from producers import keys
from producers.contract import TriggerRequest, encode_request
from worker.logs import configure_logging
from worker.processing import Delivery, Processor
from worker.runtime import build_processor
from worker.settings import WorkerSettings
from worker.transport import safe_loads


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--redis-url", default=os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/15"))
    parser.add_argument("--count", type=int, default=500)
    return parser.parse_args()


def invalid_request(index: int) -> bytes:
    """A typical producer mistake: a step parameter of the wrong type."""
    request = TriggerRequest(
        request_id=f"invalid-{index}",
        pipeline_name="training_pipeline",
        steps={"train_model": {"parameters": {"n_estimators": "many"}}},
        source="benchmark",
    )
    return encode_request(request).encode()


def garbage(index: int) -> bytes:
    """An unreadable kilobyte pushed straight onto the queue."""
    return os.urandom(1024) + str(index).encode()


def oversized(index: int) -> bytes:
    """A 10 MB item, as a careless producer or an attacker might push."""
    return b"x" * (10 * 1024 * 1024) + str(index).encode()


def deliver(processor: Processor, item: bytes, as_request: bool) -> str:
    """Hand `item` to the processor the way the worker would; return the id it was recorded under."""
    if as_request:
        delivery = Delivery(raw=item.decode(), task_id=json.loads(item)["request_id"])
    else:
        message = safe_loads(item, processor.s.settings.queue, max_bytes=2 * processor.s.settings.max_payload_bytes)
        args, kwargs, _ = json.loads(base64.b64decode(message["body"]))
        delivery = Delivery(raw=args[0], task_id=message["headers"]["id"], **kwargs)
    return processor.handle(delivery).request_id


def measure(client: redis.Redis, processor: Processor, kind: str, count: int) -> dict[str, Any]:
    """Per-request bytes for `count` items of one kind: per key, and in all (indexes included)."""
    make, as_request = {"invalid": (invalid_request, True), "garbage": (garbage, False)}.get(kind, (oversized, False))
    client.flushdb()
    before = int(client.info("memory")["used_memory"])
    sizes, ids = [], []
    for index in range(count):
        item = make(index)
        sizes.append(len(item))
        ids.append(deliver(processor, item, as_request))
    after = int(client.info("memory")["used_memory"])
    state = sum(client.memory_usage(keys.state_key(i)) or 0 for i in ids) / count
    letter = sum(client.memory_usage(keys.dead_letter_key(i)) or 0 for i in ids) / count
    return {
        "requests": count,
        "arrived_bytes_per_request": round(sum(sizes) / count),
        "state_key_bytes": round(state),
        "dead_letter_key_bytes": round(letter),
        "total_bytes_per_request_incl_indexes": round((after - before) / count),
    }


def main() -> None:
    args = parse_args()
    client = dedicated_redis(args.redis_url)
    settings = WorkerSettings(redis_url=args.redis_url)
    configure_logging("json", "CRITICAL", settings.redact_keys)
    processor = build_processor(settings)
    figures = {
        "invalid_parameters": measure(client, processor, "invalid", args.count),
        "garbage_1kb": measure(client, processor, "garbage", args.count),
        "oversized_10mb": measure(client, processor, "oversized", max(1, args.count // 50)),
    }
    client.flushdb()
    print(json.dumps({"benchmark": "rejected_footprint", "redis_url": args.redis_url, **figures}, indent=2))


if __name__ == "__main__":
    main()
