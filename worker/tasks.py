"""The one Celery task, a thin adapter over `Processor.handle`, and the worker's lifecycle hooks."""

from __future__ import annotations

import gc
import resource
import threading
from typing import Any

import redis
from celery import Celery, Task
from celery.exceptions import Reject, TimeLimitExceeded

from pipelines.registry import RegistryError
from producers import keys
from producers.client import connect
from producers.credentials import KeysFileError
from producers.state import StateStore
from worker.catalog import START_WAIT, CatalogThread
from worker.dead_letters import DeadLetterStore
from worker.delivery import Delivery
from worker.logs import configure_worker_logging, get_logger
from worker.metrics_server import MetricsServer
from worker.processing import Processor
from worker.runtime import build_catalog_publisher, build_processor
from worker.schedule import RetrySchedule, ScheduleReleaser
from worker.settings import WorkerSettings
from worker.sweeper import Sweeper, SweeperThread

_processor: Processor | None = None
_releaser: ScheduleReleaser | None = None
_sweeper: SweeperThread | None = None
_catalog_thread: CatalogThread | None = None
_app: Celery | None = None
_metrics: MetricsServer | None = None


SUPPORTED_POOLS = ("prefork", "solo")
"""Pools whose tasks run on a process's main thread, where the run time limit's alarm can interrupt them.
Only prefork adds the hard limit (the pool kills the child) and the per-child memory ceiling."""


class TriggerTask(Task):
    """The trigger task's class: records a run the pool killed at the hard time limit."""

    def on_failure(self, exc: Exception, task_id: str, args: Any, kwargs: Any, einfo: Any) -> None:
        """Called in the main process when the pool killed the child at `time_limit`: record `failed`."""
        if not isinstance(exc, TimeLimitExceeded) or not args:
            return
        delivery = Delivery(raw=args[0], task_id=task_id, **(kwargs or {}))
        threading.Thread(target=record_killed, args=(self.app, delivery), daemon=True).start()


def record_killed(app: Celery, delivery: Delivery) -> None:
    """Off the consumer's loop: wait for the killed child's lease, then record its request `failed`."""
    settings = settings_of(app)
    try:
        processor_for(app).record_killed(delivery, hard_time_limit(settings), wait=3 * settings.lease_timeout)
    except Exception as error:  # noqa: BLE001 - a thread of the consumer's own process: log, never crash it
        get_logger().exception("trigger.record_failed", request_id=delivery.task_id, error=str(error))


def hard_time_limit(settings: WorkerSettings) -> float:
    """The pool kills a child this long after its task started: the largest run limit plus the grace."""
    return settings.hard_time_limit()


def register(app: Celery) -> None:
    """Register the trigger task on `app`."""
    global _app
    _app = app
    app.task(
        name=keys.TASK_NAME,
        base=TriggerTask,
        shared=False,
        bind=True,
        acks_late=True,
        reject_on_worker_lost=True,
        ignore_result=True,
        time_limit=hard_time_limit(settings_of(app)),
    )(run_trigger)


def run_trigger(task: Task, raw: str, **kwargs: Any) -> str:
    """Handle one trigger request; Redis trouble requeues it, nothing else escapes (see `Processor.handle`).

    `kwargs` are the transport-checked task keywords (`worker.transport.TASK_KWARGS`).
    """
    properties = task.request.properties or {}
    delivery = Delivery(raw=raw, task_id=task.request.id, delivery_tag=properties.get("delivery_tag"), **kwargs)
    try:
        return processor_for(task.app).handle(delivery).status.value
    except redis.RedisError as exc:
        get_logger().error("trigger.requeued", reason=f"Redis unavailable: {exc}", request_id=task.request.id)
        raise Reject(str(exc), requeue=True) from exc


def end_on_arrival(task_id: str, raw: str, kwargs: dict[str, Any]) -> bool:
    """The transport's `on_arrival` hook: this process's processor ends duplicates and superseded requests."""
    return _app is not None and processor_for(_app).end_on_arrival(task_id, raw, kwargs)


def settings_of(app: Celery) -> WorkerSettings:
    """The settings object the app was created with."""
    return app.trigger_settings  # type: ignore[attr-defined,no-any-return]


def processor_for(app: Celery) -> Processor:
    """This process's processor, built on first use (after fork, in prefork children)."""
    global _processor
    if _processor is None:
        _processor = build_processor(settings_of(app))
    return _processor


def _configure(app: Celery) -> WorkerSettings:
    settings = settings_of(app)
    configure_worker_logging(settings, zenml=True)
    return settings


def on_setup_logging(**_: Any) -> None:
    """Celery's `setup_logging` signal (worker and beat): our log stream, so Celery installs no handler."""
    if _app is not None:
        configure_worker_logging(settings_of(_app))


def on_worker_init(sender: Any = None, **_: Any) -> None:
    """Main process: set up logging and the metrics directory, and fail fast on a bad pipeline configuration or pool."""
    global _metrics
    if _app is None:
        return
    settings = _configure(_app)
    _metrics = _metrics or MetricsServer.prepare(settings)  # before any metric is made, and before the pool forks
    pool = pool_name(sender)
    if pool not in SUPPORTED_POOLS:
        message = f"--pool {pool} is not supported: use prefork (the default) or solo, where run time limits hold"
        # threads, gevent and eventlet would also share one lease holder id between concurrent runs
        get_logger().error("trigger.config_error", error=message)
        raise SystemExit(f"trigger worker: {message}")
    if pool == "solo":
        get_logger().warning(
            "trigger.solo_pool",
            reason="no child process to kill: the run time limit is only the alarm, and there is no memory ceiling",
        )
    try:
        processor = processor_for(_app)
        for entry in processor.s.registry:
            processor.signature(entry)
    except (RegistryError, KeysFileError) as exc:
        get_logger().error("trigger.config_error", error=str(exc))
        # Celery logs and ignores exceptions from signal handlers; SystemExit stops the worker.
        raise SystemExit(f"trigger worker: {exc}") from exc
    publish_catalog(processor, settings)
    get_logger().info("trigger.worker_started", pipelines=processor.s.registry.names(), queue=settings.queue)
    # ZenML's import leaves millions of long-lived objects: keep them out of every garbage collection
    # (cheaper collections per request, and prefork children share those pages instead of copying them).
    gc.freeze()


def publish_catalog(processor: Processor, settings: WorkerSettings) -> None:
    """Publish the pipelines at once, then the templates from the catalog thread, waiting a little for them.

    Listing templates initializes the ZenML store in this process. Done before the first run
    (and before the pool forks), it never races a run initializing the same store; a store that
    does not answer within `START_WAIT` does not hold the start. The catalog only lets producers
    check early, so no failure to publish it stops the worker.
    """
    global _catalog_thread
    publisher = build_catalog_publisher(processor)
    try:
        publisher.publish(list_templates=False)
    except Exception as exc:  # noqa: BLE001 - producers then skip their early check; the worker validates anyway
        get_logger().warning("trigger.catalog_failed", error=f"{type(exc).__name__}: {exc}")
    _catalog_thread = CatalogThread(publisher, settings.catalog_interval)
    _catalog_thread.start()
    _catalog_thread.first_done.wait(START_WAIT)


def on_worker_ready(sender: Any = None, **_: Any) -> None:
    """Main process: serve the metrics, start releasing due retries and sweeping for messages lost in flight."""
    global _releaser, _sweeper
    if _app is None or _releaser is not None:
        return
    settings = settings_of(_app)
    if _metrics is not None:
        _metrics.serve()
    client = connect(settings)
    _releaser = ScheduleReleaser(RetrySchedule(client, settings.queue))
    _releaser.start()
    sweeper = Sweeper(client, settings.queue, StateStore(client, settings.state_ttl), settings.lost_after)
    letters = DeadLetterStore.from_settings(client, settings)  # pruned by age here, off the write path
    _sweeper = SweeperThread((sweeper.sweep, letters.prune), settings.sweep_interval)
    _sweeper.start()


def on_worker_process_init(sender: Any = None, **_: Any) -> None:
    """Prefork child: logging, its memory ceiling, and a fresh processor (no connections shared across fork)."""
    global _processor
    if _app is not None:
        limit_memory(_configure(_app).memory_limit_mb)
        _processor = None


def pool_name(worker: Any) -> str:
    """`prefork`, `solo`, `threads`, … for the worker controller Celery passes to `worker_init`."""
    pool_cls = getattr(worker, "pool_cls", None)
    module = getattr(pool_cls, "__module__", "") or str(pool_cls or "prefork")
    name = module.rsplit(".", 1)[-1]
    return {"asynpool": "prefork"}.get(name, name)


def limit_memory(megabytes: int) -> None:
    """Cap this process's address space, so a blow-up raises `MemoryError` in the run, not the machine's OOM."""
    if megabytes > 0:
        limit = megabytes * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def on_worker_shutdown(sender: Any = None, **_: Any) -> None:
    """Stop the retry releaser, the sweeper, the catalog thread and the metrics endpoint."""
    for thread in (_releaser, _sweeper, _catalog_thread):
        if thread is not None:
            thread.stopped.set()
    if _metrics is not None:
        _metrics.close()
