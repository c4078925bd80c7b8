"""The Celery app factory: JSON only, late acks, prefetch 1, the safe Redis transport."""

from __future__ import annotations

import ssl
from typing import Any
from urllib.parse import urlsplit

from celery import Celery, signals

from producers import keys, priority
from worker.logs import TriggerBeat, TriggerWorker, on_shutting_down
from worker.settings import WorkerSettings


def celery_config(settings: WorkerSettings) -> dict[str, Any]:
    """Celery settings derived from ours; every delivery guarantee is set here, explicitly."""
    return {
        **broker(settings),
        "broker_use_ssl": broker_tls(settings.redis_url),
        "broker_connection_retry_on_startup": True,
        "broker_connection_max_retries": None,
        "task_serializer": "json",
        "accept_content": ["json"],
        "result_accept_content": ["json"],
        "task_ignore_result": True,
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        "worker_concurrency": settings.concurrency,
        # A child whose resident memory grew past 3/4 of its ceiling is replaced after its task.
        "worker_max_memory_per_child": settings.memory_limit_mb * 768 or None,
        "task_default_queue": settings.queue,
        "task_queues": None,
        # Logging is ours (`worker.logs`, through Celery's `setup_logging` signal): Celery neither
        # configures the root logger nor redirects stdout; with JSON lines we redirect it ourselves.
        "worker_hijack_root_logger": False,
        "worker_redirect_stdouts": False,
        "worker_send_task_events": settings.task_events,
        "worker_enable_remote_control": settings.remote_control,
        # A cold shutdown lets running requests go on this long, then stops them; kombu puts their
        # unacknowledged messages back on the queue as the worker closes (see README "Stopping").
        "worker_soft_shutdown_timeout": settings.soft_shutdown_timeout,
        "worker_enable_soft_shutdown_on_idle": False,
        # `celery -A worker beat` runs the schedules file through the scheduler that enqueues requests.
        "beat_scheduler": "worker.beat:TriggerScheduler",
    }


def broker(settings: WorkerSettings) -> dict[str, Any]:
    """The broker's URL, transport and options: the safe transport, over Sentinel when the URL names sentinels."""
    options = {
        "visibility_timeout": settings.lease_timeout,
        "unacked_restore_interval": max(1, settings.lease_timeout // 6),
        "unacked_restore_throttle": 1,
        "socket_timeout": 30,
        "socket_connect_timeout": 5,
        "max_message_bytes": 2 * settings.max_payload_bytes + 64 * 1024,
        "guarded_queues": (settings.queue,),
        **priority.TRANSPORT_OPTIONS,  # one list per priority step, popped most urgent first
    }
    address = settings.sentinel()
    if address is None:
        return {
            "broker_url": settings.redis_url,
            "broker_transport": "worker.transport:Transport",
            "broker_transport_options": options,
        }
    return {
        "broker_url": address.kombu_url(),
        "broker_transport": "worker.transport:SentinelTransport",
        "broker_transport_options": {**options, "master_name": address.master_name},
    }


def broker_tls(url: str) -> dict[str, Any] | None:
    """For `rediss://`, TLS that verifies the server against the system CAs, as redis-py does for producers.

    Without it the worker's transport would not use TLS at all; `ssl_*` parameters in the URL
    (`ssl_ca_certs=/path/ca.crt` for a private CA) replace these options.
    """
    return {"ssl_cert_reqs": ssl.CERT_REQUIRED} if urlsplit(url).scheme == "rediss" else None


def create_app(settings: WorkerSettings | None = None) -> Celery:
    """A Celery app for `settings` with the trigger task registered."""
    from worker import tasks

    settings = settings or WorkerSettings()
    app = Celery("zenml_trigger", set_as_current=False)
    app.conf.update(celery_config(settings))
    app.conf.broker_transport_options["on_arrival"] = tasks.end_on_arrival
    app.trigger_settings = settings  # type: ignore[attr-defined]
    app.Worker = app.subclass_with_self(TriggerWorker)
    app.Beat = app.subclass_with_self(TriggerBeat)
    tasks.register(app)
    _connect_signals()
    return app


_SIGNALS_CONNECTED = False


def _connect_signals() -> None:
    global _SIGNALS_CONNECTED
    if _SIGNALS_CONNECTED:
        return
    from worker import tasks

    signals.setup_logging.connect(tasks.on_setup_logging, weak=False)
    signals.worker_shutting_down.connect(on_shutting_down, weak=False)
    signals.worker_init.connect(tasks.on_worker_init, weak=False)
    signals.worker_ready.connect(tasks.on_worker_ready, weak=False)
    signals.worker_process_init.connect(tasks.on_worker_process_init, weak=False)
    signals.worker_shutdown.connect(tasks.on_worker_shutdown, weak=False)
    _SIGNALS_CONNECTED = True


__all__ = ["celery_config", "create_app", "keys"]
