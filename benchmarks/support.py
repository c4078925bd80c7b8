"""Shared pieces of the worker benchmarks: a dedicated Redis db, worker subprocesses, state polling, statistics.

Imported as a sibling module (`python benchmarks/NAME.py` puts this directory first on `sys.path`).
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from types import TracebackType
from urllib.parse import urlsplit

import redis

from producers import keys
from producers.client import TriggerClient
from producers.contract import TriggerRequest, encode_request
from producers.envelope import task_envelope
from producers.state import TERMINAL, RequestState

REPO = Path(__file__).resolve().parents[1]
TERMINAL_VALUES = frozenset(status.value for status in TERMINAL)


def venv_command(name: str) -> str:
    """The console script `name` next to this interpreter (the project's .venv), else on PATH."""
    for candidate in (Path(sys.executable).parent / name, REPO / ".venv" / "bin" / name):
        if candidate.exists():
            return str(candidate)
    found = shutil.which(name)
    if found is None:
        raise SystemExit(f"cannot find the {name!r} command; install the project with its worker extra")
    return found


def dedicated_redis(url: str) -> redis.Redis:
    """A client for the benchmark's own Redis db, flushed; refuses db 0 (the shared default)."""
    db = (urlsplit(url).path or "/0").strip("/") or "0"
    if db == "0":
        raise SystemExit(f"{url}: use a dedicated db number (the benchmark flushes it), not db 0")
    client = redis.Redis.from_url(url, socket_connect_timeout=2)
    try:
        client.ping()
    except redis.RedisError as exc:
        raise SystemExit(f"Redis at {url} does not answer: {exc}") from None
    client.flushdb()
    return client


def finish_workdir(workdir: Path, keep: bool, failed: bool) -> str | None:
    """Remove the temp dir, unless asked to keep it or the run failed; return its path when kept."""
    if keep or failed:
        if failed:
            sys.stderr.write(f"benchmark failed; logs and ZenML store kept in {workdir}\n")
        return str(workdir)
    shutil.rmtree(workdir, ignore_errors=True)
    return None


def worker_env(**overrides: str) -> dict[str, str]:
    """This process's environment without inherited `TRIGGER_*` settings, plus `overrides`."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("TRIGGER_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env.update(overrides)
    return env


def trigger_worker_env(redis_url: str, queue: str, zenml_path: Path, **extra: str) -> dict[str, str]:
    """What `trigger worker` gets: its Redis and queue, a private ZenML store, JSON logs at WARNING."""
    return worker_env(
        TRIGGER_REDIS_URL=redis_url,
        TRIGGER_QUEUE=queue,
        ZENML_ANALYTICS_OPT_IN="false",
        ZENML_CONFIG_PATH=str(zenml_path),
        TRIGGER_LOG_FORMAT="json",
        TRIGGER_LOG_LEVEL="WARNING",
        **extra,
    )


class WorkerProcess:
    """A worker subprocess with its output in a log file; always terminated (then killed) on exit."""

    def __init__(self, command: Sequence[str], env: dict[str, str], log_path: Path) -> None:
        self.command = list(command)
        self.env = env
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> WorkerProcess:
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                self.command, cwd=REPO, env=self.env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
            )
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
        if exc_type is not None and not issubclass(exc_type, KeyboardInterrupt):
            sys.stderr.write(f"--- worker log tail ({self.log_path}) ---\n{self.tail()}\n")

    def check_alive(self) -> None:
        """Raise if the worker has exited."""
        if self.process is not None and self.process.poll() is not None:
            raise RuntimeError(f"worker exited with code {self.process.returncode}:\n{self.tail()}")

    def stop(self, timeout: float = 15) -> int | None:
        """SIGTERM (Celery's warm shutdown), then SIGKILL after `timeout` seconds; return the exit code."""
        process = self.process
        if process is None:
            return None
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        return process.returncode

    def tail(self, chars: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def count_events(self, event: str) -> int:
        """How many structured log lines carry `"event": event`."""
        found = 0
        with open(self.log_path, errors="replace") as log:
            for line in log:
                if event not in line or not line.startswith("{"):
                    continue
                try:
                    found += json.loads(line).get("event") == event
                except ValueError:
                    continue
        return found


def enqueue_at_once(client: TriggerClient, requests: Iterable[TriggerRequest]) -> float:
    """Write exactly what `TriggerClient.send` writes (queued state + envelope) for every request, onto a
    staging list, then RENAME it onto the queue, so the whole batch appears at one instant and a producer
    loop never paces the worker. Returns the wall-clock time of the RENAME."""
    queue = client.settings.queue
    staging = f"{queue}:bench-staging"
    if client.redis.exists(queue):
        raise RuntimeError(f"queue {queue!r} is not empty; the RENAME would overwrite it")
    pipe = client.redis.pipeline(transaction=False)
    for request in requests:
        client.states.put(RequestState.queued(request), pipe)
        pipe.lpush(staging, task_envelope(keys.TASK_NAME, request.request_id, [encode_request(request)], queue))
    pipe.execute()
    moved_at = time.time()
    client.redis.rename(staging, queue)
    return moved_at


def wait_terminal(
    client: redis.Redis,
    request_ids: Sequence[str],
    timeout: float,
    worker: WorkerProcess | None = None,
    poll: float = 0.2,
) -> dict[str, RequestState]:
    """Poll (MGET, in chunks) until every request has a terminal state; return those states."""
    deadline = time.monotonic() + timeout
    pending = list(request_ids)
    done: dict[str, RequestState] = {}
    while pending:
        still: list[str] = []
        for start in range(0, len(pending), 1000):
            chunk = pending[start : start + 1000]
            for request_id, raw in zip(chunk, client.mget([keys.state_key(r) for r in chunk]), strict=True):
                if raw is not None and json.loads(raw).get("status") in TERMINAL_VALUES:
                    done[request_id] = RequestState.model_validate_json(raw)
                else:
                    still.append(request_id)
        pending = still
        if not pending:
            break
        if worker is not None:
            worker.check_alive()
        if time.monotonic() > deadline:
            raise TimeoutError(f"{len(pending)} of {len(request_ids)} requests not terminal after {timeout:g}s")
        time.sleep(poll)
    return done


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), -(-len(ordered) * q // 100)))
    return ordered[int(rank) - 1]


def describe_ms(values_ms: Sequence[float]) -> dict[str, object]:
    """p50 / mean / min / max and every value, in ms."""
    return {
        "p50_ms": round(percentile(values_ms, 50), 1),
        "mean_ms": round(statistics.fmean(values_ms), 1),
        "min_ms": round(min(values_ms), 1),
        "max_ms": round(max(values_ms), 1),
        "values_ms": [round(v, 1) for v in values_ms],
    }


def drain_figures(count: int, span_s: float) -> dict[str, float]:
    """`count` messages handled in `span_s` seconds, as a rate and a per-message time."""
    return {
        "messages": count,
        "seconds": round(span_s, 4),
        "requests_per_s": round(count / span_s, 1) if span_s > 0 else float("inf"),
        "ms_per_request": round(span_s * 1000 / count, 3) if count else 0.0,
    }
