"""`trigger gateway`: serve the HTTP gateway with uvicorn (extra `gateway`)."""

from __future__ import annotations

import os
import shutil
import tempfile

import click
import uvicorn

from producers.gateway_metrics import MULTIPROC_ENV


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to listen on (0.0.0.0 for all).")
@click.option("--port", default=8080, show_default=True, type=click.IntRange(1, 65535), help="TCP port.")
@click.option("--workers", default=1, show_default=True, type=click.IntRange(1, 64), help="Server processes.")
@click.option("--log-level", default="info", show_default=True, help="uvicorn's log level.")
def gateway(host: str, port: int, workers: int, log_level: str) -> None:
    """Serve POST /v1/triggers, GET /v1/triggers/{id}, /healthz, /readyz, /metrics and the OpenAPI docs at /docs.

    Settings come from the same TRIGGER_* variables as every producer (TRIGGER_REDIS_URL, TRIGGER_QUEUE,
    TRIGGER_ENQUEUE_TIMEOUT, ...).
    """
    shared = _metrics_dir() if workers > 1 else None
    try:
        uvicorn.run(
            "producers.gateway:create_app",
            factory=True,
            host=host,
            port=port,
            workers=workers,
            log_level=log_level,
            proxy_headers=True,
        )
    finally:
        if shared is not None:
            shutil.rmtree(shared, ignore_errors=True)


def _metrics_dir() -> str:
    """A fresh directory where every server process writes its metrics, so `/metrics` answers with their sum."""
    path = tempfile.mkdtemp(prefix="trigger-gateway-metrics-")
    os.environ[MULTIPROC_ENV] = path  # read by prometheus-client as each server process starts
    return path
