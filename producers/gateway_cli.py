"""`trigger gateway`: serve the HTTP gateway with uvicorn (extra `gateway`).

uvicorn is given no logging configuration of its own (`log_config=None`): its error and access
records reach the root logger's log stream (`producers.logs`), set up in every server process.
"""

from __future__ import annotations

import os
import shutil
import tempfile

import click
import uvicorn
from fastapi import FastAPI

from producers.gateway import create_app
from producers.gateway_auth import GatewaySettings
from producers.gateway_metrics import MULTIPROC_ENV
from producers.logs import configure_logging


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to listen on (0.0.0.0 for all).")
@click.option("--port", default=8080, show_default=True, type=click.IntRange(1, 65535), help="TCP port.")
@click.option("--workers", default=1, show_default=True, type=click.IntRange(1, 64), help="Server processes.")
@click.option("--log-level", default="info", show_default=True, help="uvicorn's log level.")
def gateway(host: str, port: int, workers: int, log_level: str) -> None:
    """Serve POST /v1/triggers, GET /v1/triggers/{id}, /healthz, /readyz, /metrics and the OpenAPI docs at /docs.

    Settings come from the same TRIGGER_* variables as every producer (TRIGGER_REDIS_URL, TRIGGER_QUEUE,
    TRIGGER_ENQUEUE_TIMEOUT, TRIGGER_LOG_FORMAT, ...).
    """
    start_log_stream(GatewaySettings())
    shared = _metrics_dir() if workers > 1 else None
    try:
        uvicorn.run(
            "producers.gateway_cli:served_app",
            factory=True,
            host=host,
            port=port,
            workers=workers,
            log_level=log_level,
            log_config=None,
            proxy_headers=True,
        )
    finally:
        if shared is not None:
            shutil.rmtree(shared, ignore_errors=True)


def start_log_stream(settings: GatewaySettings) -> None:
    """This process's log stream: the supervisor's, and each server process's (uvicorn spawns them afresh)."""
    configure_logging(settings.log_format, settings.log_level)


def served_app() -> FastAPI:
    """The app factory uvicorn calls in each server process: its log stream, then the gateway."""
    settings = GatewaySettings()
    start_log_stream(settings)
    return create_app(settings)


def _metrics_dir() -> str:
    """A fresh directory where every server process writes its metrics, so `/metrics` answers with their sum."""
    path = tempfile.mkdtemp(prefix="trigger-gateway-metrics-")
    os.environ[MULTIPROC_ENV] = path  # read by prometheus-client as each server process starts
    return path
