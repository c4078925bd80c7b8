"""The one Celery task, a thin adapter over `Processor.handle`, and the worker's lifecycle hooks."""

from __future__ import annotations

from typing import Any

import redis
from celery import Celery, Task
from celery.exceptions import Reject

from pipelines.registry import RegistryError
from producers import keys
from producers.client import connect
from worker.logs import configure_logging, get_logger
from worker.processing import Delivery, Processor
from worker.runtime import build_processor
from worker.schedule import RetrySchedule, ScheduleReleaser
from worker.settings import WorkerSettings

_processor: Processor | None = None
_releaser: ScheduleReleaser | None = None
_app: Celery | None = None


def register(app: Celery) -> None:
    """Register the trigger task on `app`."""
    global _app
    _app = app
    app.task(name=keys.TASK_NAME, bind=True, acks_late=True, reject_on_worker_lost=True, ignore_result=True)(
        run_trigger
    )


def run_trigger(
    task: Task, raw: str, attempt: int | None = None, quarantine: str | None = None, raw_encoding: str = "utf-8"
) -> str:
    """Handle one trigger request; Redis trouble requeues it, nothing else escapes."""
    properties = task.request.properties or {}
    delivery = Delivery(
        raw=raw,
        task_id=task.request.id,
        delivery_tag=properties.get("delivery_tag"),
        attempt=attempt,
        quarantine=quarantine,
        raw_encoding=raw_encoding,
    )
    try:
        return processor_for(task.app).handle(delivery).status.value
    except redis.RedisError as exc:
        get_logger().error("trigger.requeued", reason=f"Redis unavailable: {exc}", request_id=task.request.id)
        raise Reject(str(exc), requeue=True) from exc


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
    configure_logging(settings.log_format, settings.log_level, settings.redact_keys)
    return settings


def on_worker_init(sender: Any = None, **_: Any) -> None:
    """Main process: set up logging and fail fast on a bad pipeline configuration."""
    if _app is None:
        return
    settings = _configure(_app)
    try:
        processor = processor_for(_app)
        for entry in processor.s.registry:
            processor.signature(entry)
    except RegistryError as exc:
        get_logger().error("trigger.config_error", error=str(exc))
        # Celery logs and ignores exceptions from signal handlers; SystemExit stops the worker.
        raise SystemExit(f"trigger worker: {exc}") from exc
    get_logger().info("trigger.worker_started", pipelines=processor.s.registry.names(), queue=settings.queue)


def on_worker_ready(sender: Any = None, **_: Any) -> None:
    """Main process: start releasing due retries."""
    global _releaser
    if _app is None or _releaser is not None:
        return
    settings = settings_of(_app)
    _releaser = ScheduleReleaser(RetrySchedule(connect(settings), settings.queue))
    _releaser.start()


def on_worker_process_init(sender: Any = None, **_: Any) -> None:
    """Prefork child: logging, and a fresh processor (no connections shared across fork)."""
    global _processor
    if _app is not None:
        _configure(_app)
        _processor = None


def on_worker_shutdown(sender: Any = None, **_: Any) -> None:
    """Stop the retry releaser."""
    if _releaser is not None:
        _releaser.stopped.set()
