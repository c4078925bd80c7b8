"""Outcome log setup: structlog, JSON in production and readable in a terminal, secrets redacted."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable
from typing import Any

import structlog

REDACTED = "***"


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


def configure_logging(log_format: str = "auto", level: str = "INFO", redact: Iterable[str] = ()) -> None:
    """Configure structlog once per process."""
    use_json = log_format == "json" or (log_format == "auto" and not sys.stderr.isatty())
    renderer: Any = structlog.processors.JSONRenderer() if use_json else structlog.dev.ConsoleRenderer()
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            SecretRedactor(redact),
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )


def get_logger() -> Any:
    """The outcome logger; events carry stable names such as `trigger.succeeded`."""
    return structlog.get_logger("zenml_trigger")
