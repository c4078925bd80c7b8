"""The worker's memory, idle and after 1,000 requests, next to a bare Celery worker; and what the image holds.

(a) `trigger worker --pool prefork --concurrency 2` (the compose stack's worker): its main process and its pool
    children, by psutil, once ready (a probe request rejected), after N requests rejected by validation (an
    unknown step, as in `worker_overhead.py`), and after K runs of the tutorial's training pipeline (small steps).
    RSS is per process and summed; PSS is summed too, which counts the pages the children share with the main
    process once (they fork from it after ZenML is imported and `gc.freeze()`d), so it is the honest total.
(b) Baseline, same run: `celery -A benchmarks.noop_app worker` with the trigger worker's Celery settings, pool and
    concurrency, idle and after N no-op tasks.
(c) The image's Python layer, estimated (no Docker engine here): the files the Dockerfile's dependency layer
    would install (`dependencies` + the `worker` and `gateway` extras, resolved through this environment's
    installed distributions and their RECORD files, pip and setuptools excluded since the base image has them)
    plus the project's own code. `--pip-target` instead runs a fresh `pip install --target` of the same
    requirements and measures the directory (downloads them). The base image's own size is not measured.

    python benchmarks/worker_memory.py [--requests 1000] [--runs 3] [--redis-url redis://127.0.0.1:6379/14]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path
from typing import Any

import psutil
from packaging.requirements import Requirement
from support import (
    REPO,
    WorkerProcess,
    dedicated_redis,
    enqueue_at_once,
    trigger_worker_env,
    venv_command,
    wait_terminal,
)

from producers.client import TriggerClient
from producers.contract import TriggerRequest, normalize_steps
from producers.settings import ProducerSettings

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

PIPELINE = "training_pipeline"
INVALID_STEPS = {"no_such_step": {"x": 1}}
QUICK_STEPS = {"load_data": {"n_samples": 200}, "train_model": {"n_estimators": 10}}
MIB = 1024 * 1024
IN_BASE_IMAGE = frozenset({"pip", "setuptools", "wheel"})
OWN_CODE = ("producers", "worker", "pipelines")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add = parser.add_argument
    add("--requests", type=int, default=1000, help="rejected requests, and no-op tasks (default: %(default)s)")
    add("--runs", type=int, default=3, help="tutorial pipeline runs after them (default: %(default)s)")
    add("--concurrency", type=int, default=2, help="pool children of both workers (default: %(default)s)")
    add("--redis-url", default="redis://127.0.0.1:6379/14", help="dedicated Redis db, flushed (default: %(default)s)")
    add("--queue", default="bench-worker-memory", help="queue name (default: %(default)s)")
    add("--timeout", type=float, default=600, help="seconds to wait for any one phase (default: %(default)s)")
    add("--pip-target", action="store_true", help="(c) by a fresh `pip install --target` (downloads everything)")
    add("--skip-workers", action="store_true", help="only (c)")
    return parser.parse_args()


def memory(pid: int) -> dict[str, Any]:
    """RSS and PSS of a worker's main process and every process under it, in MiB."""
    main = psutil.Process(pid)
    rows = [_process_row(process, main.pid) for process in [main, *main.children(recursive=True)]]
    return {
        "processes": rows,
        "rss_total_mib": round(sum(row["rss_mib"] for row in rows), 1),
        "pss_total_mib": round(sum(row["pss_mib"] for row in rows), 1),
    }


def _process_row(process: psutil.Process, main_pid: int) -> dict[str, Any]:
    info = process.memory_full_info()
    role = "main" if process.pid == main_pid else "child"
    return {"role": role, "rss_mib": round(info.rss / MIB, 1), "pss_mib": round(info.pss / MIB, 1)}


def settled(pid: int, pause: float = 1.0) -> dict[str, Any]:
    """Memory once the last replies and log lines are through."""
    time.sleep(pause)
    return memory(pid)


def trigger_worker(args: argparse.Namespace, workdir: Path, client: TriggerClient) -> dict[str, Any]:
    """(a): the trigger worker idle, after the rejected requests, after the runs."""
    command = [venv_command("trigger"), "worker", "--pool", "prefork", "--concurrency", str(args.concurrency)]
    zenml_path = workdir / "zenml"
    zenml_path.mkdir()
    env = trigger_worker_env(args.redis_url, args.queue, zenml_path)
    figures: dict[str, Any] = {"command": " ".join(["trigger", *command[1:]])}
    with WorkerProcess(command, env, workdir / "trigger-worker.log") as worker:
        probe = client.trigger(PIPELINE, steps=INVALID_STEPS, source="bench-readiness-probe")
        wait_terminal(client.redis, [probe], args.timeout, worker)
        pid = _pid(worker)
        figures["idle"] = settled(pid)
        rejected = [
            TriggerRequest(pipeline_name=PIPELINE, steps=normalize_steps(INVALID_STEPS)) for _ in range(args.requests)
        ]
        enqueue_at_once(client, rejected)
        wait_terminal(client.redis, [r.request_id for r in rejected], args.timeout, worker)
        figures[f"after_{args.requests}_rejected"] = settled(pid)
        if args.runs:
            figures[f"after_{args.requests}_rejected_and_{args.runs}_runs"] = _after_runs(client, worker, pid, args)
    return figures


def _after_runs(client: TriggerClient, worker: WorkerProcess, pid: int, args: argparse.Namespace) -> dict[str, Any]:
    statuses = []
    for _ in range(args.runs):
        request = TriggerRequest(pipeline_name=PIPELINE, steps=normalize_steps(QUICK_STEPS), source="bench-memory")
        client.send(request)
        statuses.append(wait_terminal(client.redis, [request.request_id], args.timeout, worker)[request.request_id])
    return {"statuses": [state.status.value for state in statuses], **settled(pid)}


def _pid(worker: WorkerProcess) -> int:
    assert worker.process is not None
    return worker.process.pid


def noop_worker(args: argparse.Namespace, workdir: Path, client: TriggerClient) -> dict[str, Any]:
    """(b): a bare Celery worker with the same settings, idle and after as many no-op tasks."""
    sys.path.insert(0, str(Path(__file__).parent))
    import noop_app

    queue, done = f"{args.queue}-noop", f"{args.queue}-noop:done"
    app = noop_app.app
    app.conf.update(noop_app.config(args.redis_url, queue))
    command = [venv_command("celery"), "-A", "benchmarks.noop_app", "worker", "--pool", "prefork"]
    command += ["--concurrency", str(args.concurrency), "--loglevel", "WARNING"]
    env = {
        **trigger_worker_env(args.redis_url, queue, workdir),
        "BENCH_NOOP_BROKER_URL": args.redis_url,
        "BENCH_NOOP_QUEUE": queue,
        "BENCH_NOOP_DONE_KEY": done,
    }
    figures: dict[str, Any] = {"command": " ".join(["celery", *command[1:]])}
    with WorkerProcess(command, env, workdir / "noop-worker.log") as worker:
        _noop_tasks(app, noop_app.TASK_NAME, 1)
        _wait_count(client, done, 1, worker, args.timeout)
        pid = _pid(worker)
        figures["idle"] = settled(pid)
        _noop_tasks(app, noop_app.TASK_NAME, args.requests)
        _wait_count(client, done, 1 + args.requests, worker, args.timeout)
        figures[f"after_{args.requests}_tasks"] = settled(pid)
    return figures


def _noop_tasks(app: Any, name: str, count: int) -> None:
    with app.producer_or_acquire() as producer:
        for _ in range(count):
            app.send_task(name, producer=producer)


def _wait_count(client: TriggerClient, key: str, count: int, worker: WorkerProcess, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while client.redis.llen(key) < count:
        worker.check_alive()
        if time.monotonic() > deadline:
            raise TimeoutError(f"{key}: {client.redis.llen(key)} of {count} no-op tasks done after {timeout:g}s")
        time.sleep(0.2)


def image_requirements() -> list[str]:
    """What the Dockerfile's dependency layer installs: the dependencies and the worker and gateway extras."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    return [*project["dependencies"], *extras["worker"], *extras["gateway"]]


def closure(requirements: list[str]) -> dict[str, metadata.Distribution]:
    """The installed distributions those requirements pull in (extras and markers applied), by name."""
    found: dict[str, metadata.Distribution] = {}
    seen: set[tuple[str, str]] = set()
    pending = [(Requirement(text), "") for text in requirements]
    while pending:
        requirement, extra = pending.pop()
        if requirement.marker is not None and not requirement.marker.evaluate({"extra": extra}):
            continue
        name = requirement.name.lower().replace("_", "-")
        dist = found.setdefault(name, metadata.distribution(name))
        for wanted in ({""} | set(requirement.extras)) - {e for n, e in seen if n == name}:
            seen.add((name, wanted))
            pending += [(Requirement(text), wanted) for text in dist.requires or []]
    return found


def installed_bytes(dist: metadata.Distribution) -> int:
    """Bytes of the files the distribution's RECORD lists (what pip wrote for it)."""
    total = 0
    for file in dist.files or []:
        path = Path(str(dist.locate_file(file)))
        if path.is_file():
            total += path.stat().st_size
    return total


def tree_bytes(root: Path) -> int:
    return sum(path.stat().st_size for path in root.rglob("*") if path.is_file() and "__pycache__" not in path.parts)


def image_layer(pip_target: bool, workdir: Path) -> dict[str, Any]:
    """(c): the estimated size of what the image adds to its base."""
    own = sum(tree_bytes(REPO / name) for name in OWN_CODE)
    requirements = image_requirements()
    if pip_target:
        dependencies, method = _pip_target_bytes(requirements, workdir), "fresh pip install --target"
        count = None
    else:
        dists = {name: dist for name, dist in closure(requirements).items() if name not in IN_BASE_IMAGE}
        sizes = {name: installed_bytes(dist) for name, dist in dists.items()}
        dependencies, count = sum(sizes.values()), len(sizes)
        method = "installed distributions of this environment (RECORD files), resolved from the requirements"
    result: dict[str, Any] = {
        "method": method,
        "requirements": requirements,
        "dependencies_mib": round(dependencies / MIB, 1),
        "own_code_mib": round(own / MIB, 2),
        "python_layer_mib": round((dependencies + own) / MIB, 1),
        "base_image": _base_image(),
    }
    if count is not None:
        result["distributions"] = count
        result["largest_mib"] = {n: round(s / MIB, 1) for n, s in sorted(sizes.items(), key=lambda kv: -kv[1])[:8]}
    return result


def _pip_target_bytes(requirements: list[str], workdir: Path) -> int:
    target = workdir / "pip-target"
    command = [sys.executable, "-m", "pip", "install", "--no-cache-dir", "--quiet", "--target", str(target)]
    subprocess.run([*command, *requirements], check=True)
    return sum(path.stat().st_size for path in target.rglob("*") if path.is_file())


def _base_image() -> str:
    for line in (REPO / "Dockerfile").read_text().splitlines():
        if line.startswith("FROM "):
            return line.split()[1]
    return "unknown"


def main() -> None:
    args = parse_args()
    output: dict[str, Any] = {
        "benchmark": "worker_memory",
        "redis_url": args.redis_url,
        "concurrency": args.concurrency,
    }
    with tempfile.TemporaryDirectory(prefix="bench-worker-memory-") as tmp:
        workdir = Path(tmp)
        if not args.skip_workers:
            redis_client = dedicated_redis(args.redis_url)
            os.environ["ZENML_ANALYTICS_OPT_IN"] = "false"
            client = TriggerClient.from_settings(ProducerSettings(redis_url=args.redis_url, queue=args.queue))
            try:
                output["trigger_worker"] = trigger_worker(args, workdir, client)
                output["bare_celery_worker"] = noop_worker(args, workdir, client)
            finally:
                redis_client.flushdb()
        output["image"] = image_layer(args.pip_target, workdir)
    print(json.dumps(output, indent=2))


if __name__ == "__main__":
    main()
