"""The log stream: structlog for our events and the standard library's logging for everyone else's.

Our events and every library's `logging` records (Celery's, kombu's, ZenML's, uvicorn's) go through
one handler on the root logger whose structlog `ProcessorFormatter` renders them alike: one JSON object
a line with `log_format="json"`, structlog's console layout otherwise. Secrets are redacted on the way.

The request context (`bound_context`) lives in a context variable of its own, not in structlog's
contextvars: ZenML copies those onto every record it stores with a step's logs.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from types import MappingProxyType
from typing import Any, TextIO

import structlog

REDACTED = "***"
LOGGER_NAME = "zenml_trigger"
"""Our events' logger; records from it are ours, whatever library handles them."""

_context: ContextVar[Mapping[str, Any]] = ContextVar("zenml_trigger_log_context", default=MappingProxyType({}))


class SecretRedactor:
    """structlog processor replacing values whose key looks secret, at any depth."""

    def __init__(self, markers: Iterable[str]) -> None:
        self.markers = tuple(marker.lower() for marker in markers)

    def __call__(self, _logger: Any, _method: str, event_dict: dict[str, Any]) -> dict[str, Any]:
        return {key: self._clean(key, value) for key, value in event_dict.items()}

    def _clean(self, key: str, value: Any) -> Any:
        if isinstance(key, str) and any(marker in key.lower() for marker in self.markers):
            return REDACTED
        if isinstance(value, dict):
            return {k: self._clean(k, v) for k, v in value.items()}
        if isinstance(value, list):
            return [self._clean("", v) for v in value]
        return value


@contextmanager
def bound_context(**fields: Any) -> Iterator[None]:
    """Add `fields` (request_id, pipeline, ...) to every line logged in this context, ours or a library's."""
    token = _context.set({**_context.get(), **fields})
    try:
        yield
    finally:
        _context.reset(token)


def merge_context(_logger: Any, _method: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    """structlog processor adding the bound request context; a field the event sets itself wins."""
    return {**_context.get(), **event_dict}


def use_json(log_format: str) -> bool:
    """`json`, or `auto` when stderr is not a terminal (a container, a pipe, a file)."""
    return log_format == "json" or (log_format == "auto" and not sys.stderr.isatty())


class StreamHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """The one handler of the log stream on the root logger (its own class, so it is replaced, not doubled)."""


def configure_logging(
    log_format: str = "auto", level: str = "INFO", redact: Iterable[str] = (), stream: TextIO | None = None
) -> StreamHandler:
    """Route structlog and the standard library's logging to one handler on `stream` (stderr by default)."""
    numeric = logging.getLevelName(level.upper())
    chain = _shared_chain(redact)
    structlog.configure(
        processors=[*chain, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.stdlib.LoggerFactory(),
        cache_logger_on_first_use=False,
    )
    handler = StreamHandler(stream or stderr_stream())
    handler.setFormatter(formatter(use_json(log_format), chain))
    install(handler, numeric)
    return handler


def _shared_chain(redact: Iterable[str]) -> list[Any]:
    """What every line gets, ours or a library's: context, level, logger, time, redaction."""
    return [
        merge_context,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        SecretRedactor(redact),
    ]


def formatter(json_lines: bool, chain: list[Any]) -> structlog.stdlib.ProcessorFormatter:
    """JSON objects (tracebacks as one string field) or structlog's console layout."""
    last: list[Any] = [structlog.processors.format_exc_info, structlog.processors.JSONRenderer()]
    if not json_lines:
        last = [structlog.dev.ConsoleRenderer()]
    return structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=chain, processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *last]
    )


def install(handler: StreamHandler, level: int) -> None:
    """Make `handler` the root logger's log stream, replacing an earlier one of ours."""
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, StreamHandler)]:
        root.removeHandler(old)
        old.close()
    root.addHandler(handler)
    root.setLevel(level)


def stderr_stream() -> TextIO:
    """A line-buffered stream of our own on the process's standard error.

    Not `sys.stderr` itself: ZenML wraps that object's `write` to capture step output, and a
    worker redirects `sys.stderr` into the log stream (a loop, if the stream wrote to it).
    """
    try:
        fd = sys.__stderr__.fileno() if sys.__stderr__ is not None else 2
        return open(fd, "w", buffering=1, encoding="utf-8", errors="backslashreplace", closefd=False)
    except (OSError, ValueError):  # no real standard error (an embedding host): use what there is
        return sys.stderr


def get_logger() -> Any:
    """The outcome logger; events carry stable names such as `trigger.succeeded`."""
    return structlog.get_logger(LOGGER_NAME)


__all__ = ["REDACTED", "SecretRedactor", "bound_context", "configure_logging", "get_logger"]
