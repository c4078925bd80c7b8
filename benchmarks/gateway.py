"""The HTTP gateway next to a bare FastAPI endpoint that only does one LPUSH, and the async client next to
redis.asyncio's bare `lpush`, on the same Redis in the same run.

HTTP: `trigger gateway` and `benchmarks/bare_lpush_app.py` each run as a uvicorn process (one worker,
same options); this script is the second process, posting the same trigger body over one keep-alive
connection per server, interleaved in rounds so drift hits both alike. It reports requests/s and
p50/p99 latency per server and the gateway/bare ratio (target: within 1.5x).

Async client: `AsyncTriggerClient.send` of prebuilt requests against `redis.asyncio.Redis.lpush` of the
envelope `send` would push, sequentially on one event loop.

The Redis db given is flushed before and after. Prints one JSON object.

    python benchmarks/gateway.py [--count 3000] [--rounds 5] [--redis-url redis://127.0.0.1:6379/14]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import redis.asyncio as aioredis
from support import WorkerProcess, dedicated_redis, percentile, venv_command, worker_env

from producers import AsyncTriggerClient, ProducerSettings, TriggerRequest
from producers.client import enqueue_call, queued

BODY = {"pipeline_name": "training_pipeline", "parameters": {"data_url": "s3://bucket/data.csv"}, "source": "bench"}
TARGET_RATIO = 1.5


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add = parser.add_argument
    add("--count", type=int, default=3000, help="timed requests per server (default: %(default)s)")
    add("--rounds", type=int, default=5, help="interleaved rounds (default: %(default)s)")
    add("--warmup", type=int, default=200, help="untimed requests per server first (default: %(default)s)")
    add("--redis-url", default="redis://127.0.0.1:6379/14", help="dedicated Redis db, flushed (default: %(default)s)")
    return parser.parse_args()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def server(app: str, port: int, env: dict[str, str], log: Path) -> WorkerProcess:
    command = [venv_command("uvicorn"), "--factory", app, "--port", str(port), "--log-level", "warning"]
    return WorkerProcess(command, env, log)


def wait_up(http: httpx.Client, path: str, process: WorkerProcess, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        process.check_alive()
        try:
            http.get(path)
            return
        except httpx.TransportError:
            time.sleep(0.2)
    raise TimeoutError(f"{http.base_url} did not answer within {timeout:g}s")


def post_many(http: httpx.Client, path: str, count: int) -> list[float]:
    """Latencies (ms) of `count` sequential POSTs over one keep-alive connection; each must be 202."""
    latencies = []
    for _ in range(count):
        started = time.perf_counter()
        answer = http.post(path, json=BODY)
        latencies.append((time.perf_counter() - started) * 1000)
        if answer.status_code != 202:
            raise RuntimeError(f"{path} answered {answer.status_code}: {answer.text[:300]}")
    return latencies


def figures(latencies: list[float]) -> dict[str, float]:
    return {
        "requests": len(latencies),
        "requests_per_s": round(1000 / statistics.fmean(latencies), 1),
        "p50_ms": round(percentile(latencies, 50), 3),
        "p99_ms": round(percentile(latencies, 99), 3),
    }


def http_benchmark(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    gateway_port, bare_port = free_port(), free_port()
    url = args.redis_url
    env = worker_env(TRIGGER_REDIS_URL=url, TRIGGER_QUEUE="bench-gateway", BENCH_BARE_REDIS_URL=url)
    gateway = server("producers.gateway:create_app", gateway_port, env, workdir / "gateway.log")
    bare = server("benchmarks.bare_lpush_app:create_app", bare_port, env, workdir / "bare.log")
    timed: dict[str, list[float]] = {"gateway": [], "bare_lpush": []}
    with gateway, bare, httpx.Client(base_url=f"http://127.0.0.1:{gateway_port}") as g:
        with httpx.Client(base_url=f"http://127.0.0.1:{bare_port}") as b:
            wait_up(g, "/healthz", gateway)
            wait_up(b, "/docs", bare)
            targets = {"gateway": (g, "/v1/triggers"), "bare_lpush": (b, "/lpush")}
            for http, path in targets.values():
                post_many(http, path, args.warmup)
            for round_ in range(args.rounds):
                for name in sorted(targets, reverse=bool(round_ % 2)):
                    http, path = targets[name]
                    timed[name] += post_many(http, path, args.count // args.rounds)
    result = {name: figures(values) for name, values in timed.items()}
    ratio = result["gateway"]["p50_ms"] / result["bare_lpush"]["p50_ms"]
    result["gateway_over_bare_p50"] = round(ratio, 2)
    result["target_ratio"] = TARGET_RATIO
    return result


async def async_client_benchmark(args: argparse.Namespace) -> dict[str, Any]:
    settings = ProducerSettings(redis_url=args.redis_url, queue="bench-async")
    requests = [TriggerRequest(**BODY) for _ in range(args.count)]
    envelopes = [enqueue_call(settings, *queued(r, settings)).args[2] for r in requests]
    timed: dict[str, list[float]] = {"async_send": [], "async_bare_lpush": []}
    bare = aioredis.Redis.from_url(args.redis_url)
    async with AsyncTriggerClient.from_settings(settings) as client:
        for name, call in (("async_send", client.send), ("async_bare_lpush", lambda e: bare.lpush("bench-a", e))):
            items = requests if name == "async_send" else envelopes
            for item in items:
                started = time.perf_counter()
                await call(item)
                timed[name].append((time.perf_counter() - started) * 1000)
    await bare.aclose()
    result: dict[str, Any] = {name: figures(values) for name, values in timed.items()}
    result["send_over_bare_p50"] = round(result["async_send"]["p50_ms"] / result["async_bare_lpush"]["p50_ms"], 2)
    return result


def main() -> None:
    args = parse_args()
    client = dedicated_redis(args.redis_url)
    workdir = Path(tempfile.mkdtemp(prefix="bench-gateway-"))
    output: dict[str, Any] = {"benchmark": "gateway", "redis_url": args.redis_url, "body": BODY}
    try:
        output["http"] = http_benchmark(args, workdir)
        client.flushdb()
        output["async_client"] = asyncio.run(async_client_benchmark(args))
    finally:
        client.flushdb()
    print(json.dumps(output, indent=2))


if __name__ == "__main__":
    main()
