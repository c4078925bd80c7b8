"""The worker's metrics endpoint: every process's metrics, aggregated, plus cluster-wide gauges from Redis.

Prefork children cannot each serve a port, so every process of the worker writes its metrics to files
in one directory (prometheus-client's multiprocess mode) and the main process serves their sum over
HTTP. The directory is made fresh at each worker start, before the pool forks, and removed at its
shutdown; the live gauges of a child that exited (a hard time limit, a memory ceiling, a crash) are
dropped at the next scrape, while its counters stay counted.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import redis

from producers.client import connect
from producers.stats import ClusterStats, read_stats
from worker.logs import get_logger
from worker.settings import WorkerSettings

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
LIVE_GAUGE_FILE = re.compile(r"^gauge_live\w+?_(\d+)\.db$")


def prepare_multiprocess_dir() -> Path:
    """Main process, before the pool forks: a fresh directory for every process's metric files."""
    path = Path(tempfile.mkdtemp(prefix="trigger-metrics-"))
    os.environ[MULTIPROC_ENV] = str(path)
    from prometheus_client import values

    values.ValueClass = values.get_value_class()  # in case prometheus_client was imported before the variable
    return path


class ExitedProcesses:
    """A collector that yields nothing: it drops the live gauges of processes gone, before the files are read."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def collect(self) -> Iterator[Any]:
        """Mark every process whose live-gauge file remains but which no longer runs as dead."""
        from prometheus_client import multiprocess

        for pid in live_gauge_pids(self.path):
            if not process_alive(pid):
                multiprocess.mark_process_dead(pid, str(self.path))
        yield from ()


def live_gauge_pids(path: Path) -> set[int]:
    """Pids with a live-gauge file in `path`."""
    found = (LIVE_GAUGE_FILE.match(name) for name in os.listdir(path))
    return {int(match.group(1)) for match in found if match}


def process_alive(pid: int) -> bool:
    """Whether a process `pid` exists (signal 0 checks without sending anything)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class ClusterCollector:
    """The cluster-wide gauges, read from Redis at scrape time (`producers.stats`, as `trigger stats` reads)."""

    def __init__(self, client: redis.Redis, queue: str) -> None:
        self.client, self.queue = client, queue

    def collect(self) -> Iterator[Any]:
        """The gauges, or none when Redis does not answer (Prometheus then shows them absent, not stale)."""
        try:
            stats = read_stats(self.client, self.queue)
        except redis.RedisError as exc:
            get_logger().warning("trigger.metrics_redis_failed", error=f"{type(exc).__name__}: {exc}")
            return
        yield from cluster_gauges(stats)


def cluster_gauges(stats: ClusterStats) -> Iterator[Any]:
    """`trigger_queue_depth`, `trigger_retry_scheduled`, `trigger_dead_letter_store_size`, `trigger_leases_held`."""
    from prometheus_client.core import GaugeMetricFamily

    depth = GaugeMetricFamily("trigger_queue_depth", "Messages on the queue, not yet taken.", labels=["queue"])
    depth.add_metric([stats.queue], stats.queue_depth)
    retries = GaugeMetricFamily("trigger_retry_scheduled", "Attempts waiting for their retry.", labels=["queue"])
    retries.add_metric([stats.queue], stats.retry_scheduled)
    yield depth
    yield retries
    yield GaugeMetricFamily("trigger_dead_letter_store_size", "Dead letters kept.", value=stats.dead_letters)
    yield GaugeMetricFamily("trigger_leases_held", "Requests a live worker leases.", value=stats.leases_held)


class MetricsServer:
    """The main process's endpoint: made at worker start (`prepare`), serving once the pool runs (`serve`)."""

    def __init__(self, settings: WorkerSettings, path: Path) -> None:
        self.settings, self.path = settings, path
        self.httpd: Any = None

    @classmethod
    def prepare(cls, settings: WorkerSettings) -> MetricsServer | None:
        """Set up the multiprocess directory (None when metrics are off); call before any metric is made."""
        return cls(settings, prepare_multiprocess_dir()) if settings.metrics_port else None

    def registry(self) -> Any:
        """Every process's metrics summed, then the cluster-wide gauges."""
        from prometheus_client import CollectorRegistry, multiprocess

        registry = CollectorRegistry()
        registry.register(ExitedProcesses(self.path))
        multiprocess.MultiProcessCollector(registry, str(self.path))
        registry.register(ClusterCollector(connect(self.settings), self.settings.queue))
        return registry

    def serve(self) -> None:
        """Listen on the metrics port; a port in use is logged, and the worker runs on without metrics."""
        from prometheus_client import start_http_server

        host, port = self.settings.metrics_host, self.settings.metrics_port
        try:
            self.httpd, _ = start_http_server(port, host, registry=self.registry())
        except OSError as exc:
            get_logger().error("trigger.metrics_unavailable", error=f"{host}:{port}: {exc}")
            return
        get_logger().info("trigger.metrics_serving", host=host, port=port)

    def close(self) -> None:
        """Stop listening and remove the directory (a next start makes a fresh one)."""
        if self.httpd is not None:
            self.httpd.shutdown()
            self.httpd.server_close()
        shutil.rmtree(self.path, ignore_errors=True)
