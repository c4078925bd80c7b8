"""The worker's and beat's side of the log stream (`producers.logs`): Celery's and ZenML's output joins it.

Celery is told not to set up logging (a `setup_logging` receiver), so its records reach our root
handler. ZenML's console handler is taken off the root logger (our handler renders ZenML's records);
its log-storage handler stays, so step logs are still stored with the run, minus our own records.
With JSON lines, `print()` in a step, Celery's banner and its shutdown notices go through the
log stream too (or not at all), so nothing writes a plain-text line.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

from celery.apps.beat import Beat
from celery.apps.worker import Worker
from celery.utils.log import LoggingProxy

from producers.logs import LOGGER_NAME, REDACTED, SecretRedactor, bound_context, configure_logging, get_logger, use_json
from worker.settings import WorkerSettings

STDOUT_LOGGER = "stdout"
STDERR_LOGGER = "stderr"
"""Loggers the redirected standard streams write to (INFO and WARNING), named as ZenML names captured output."""


def start_log_stream(settings: WorkerSettings) -> None:
    """The log stream from a program's start (`celery -A worker ...`, `trigger worker|beat`), before Celery's
    setup: what Celery warns about before it (running as root, say) is a line of the stream too."""
    configure_logging(settings.log_format, settings.log_level, settings.redact_keys)
    logging.captureWarnings(True)


def configure_worker_logging(settings: WorkerSettings, zenml: bool = False) -> None:
    """The log stream for this process; `zenml`: import ZenML first, so its own setup cannot come after ours."""
    if zenml:
        import zenml.logger
    configure_logging(settings.log_format, settings.log_level, settings.redact_keys)
    adopt_zenml_logging()
    if use_json(settings.log_format):
        redirect_std_streams()


def adopt_zenml_logging() -> None:
    """If ZenML is loaded: drop its console handler, and keep our records out of the step logs it stores."""
    zenml_logger = sys.modules.get("zenml.logger")
    if zenml_logger is None:
        return
    root = logging.getLogger()
    for handler in list(root.handlers):
        if isinstance(handler, zenml_logger.ZenMLConsoleHandler):
            root.removeHandler(handler)
        elif isinstance(handler, zenml_logger.ZenMLLoggingHandler) and not _has_our_filter(handler):
            handler.addFilter(NotOurs())


class NotOurs(logging.Filter):
    """Refuses our own records: they carry the request context, which is not the step's to store."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.name.startswith(LOGGER_NAME)


def _has_our_filter(handler: logging.Handler) -> bool:
    return any(isinstance(f, NotOurs) for f in handler.filters)


def redirect_std_streams() -> None:
    """`sys.stdout` (INFO) and `sys.stderr` (WARNING) become loggers, with Celery's own `LoggingProxy`.

    `sys.__stdout__` too: Celery writes its banner there and its shutdown notices to that stream's
    file descriptor, which the proxy does not have (no `fileno`) (so those notices are dropped, and logged as
    `trigger.worker_shutting_down` instead). `sys.__stderr__` stays the real stream: Celery's proxy
    falls back to it inside signal handlers.
    """
    if isinstance(sys.stdout, LoggingProxy):
        return
    sys.stdout = LoggingProxy(logging.getLogger(STDOUT_LOGGER), logging.INFO)
    sys.stderr = LoggingProxy(logging.getLogger(STDERR_LOGGER), logging.WARNING)
    sys.__stdout__ = sys.stdout  # type: ignore[misc]


def on_shutting_down(sig: str = "", how: str = "", exitcode: int = 0, **_: Any) -> None:
    """Celery's `worker_shutting_down` signal: the notice Celery prints, as an event."""
    get_logger().info("trigger.worker_shutting_down", signal=sig, how=how, exitcode=exitcode)


class TriggerWorker(Worker):
    """`celery worker` as ours runs it: without the banner when logging JSON (its facts are in events)."""

    def on_before_init(self, quiet: bool = False, **kwargs: Any) -> None:
        super().on_before_init(quiet=quiet or _json_app(self.app), **kwargs)


class TriggerBeat(Beat):
    """`celery beat` as ours runs it: without the banner when logging JSON."""

    def __init__(self, *args: Any, quiet: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, quiet=quiet or _json_app(kwargs.get("app") or self.app), **kwargs)


def _json_app(app: Any) -> bool:
    settings = getattr(app, "trigger_settings", None)
    return settings is not None and use_json(settings.log_format)


__all__ = [
    "REDACTED",
    "SecretRedactor",
    "TriggerBeat",
    "TriggerWorker",
    "bound_context",
    "configure_logging",
    "configure_worker_logging",
    "get_logger",
    "start_log_stream",
]
