"""`trigger demo`: the whole loop in one command, on an embedded Redis when none answers."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import click
import redis

from producers.client import TriggerClient, connect
from producers.settings import ProducerSettings, redacted_url
from producers.state import RequestState

DEMO_QUEUE = "zenml-triggers-demo"


def redis_answers(url: str) -> bool:
    """True when a Redis server (or the primary the sentinels name) answers PING at `url` within half a second."""
    try:
        return bool(connect(ProducerSettings(redis_url=url, enqueue_timeout=0.5, connect_timeout=0.5)).ping())
    except (redis.RedisError, OSError, ValueError):
        return False


def free_port() -> int:
    """An unused loopback TCP port."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _error_replies_keep_the_connection(handler: Any) -> None:
    """fakeredis's TCP server closes a connection after any error reply; Redis does not, and redis-py relies
    on that (after NOSCRIPT it loads the script on the same connection). Hand errors back as replies."""
    read = handler.current_client.read_response

    def read_response(*args: Any, **kwargs: Any) -> Any:
        try:
            return read(*args, **kwargs)
        except redis.ResponseError as exc:
            return exc

    handler.current_client.read_response = read_response


@contextmanager
def embedded_redis() -> Iterator[str]:
    """A fakeredis TCP server (with Lua, as Celery needs) in a thread, for machines without Redis."""
    from fakeredis import TcpFakeServer
    from fakeredis._clients._tcp_server import TCPFakeRequestHandler

    class Handler(TCPFakeRequestHandler):  # type: ignore[misc]
        def setup(self) -> None:
            super().setup()
            _error_replies_keep_the_connection(self)

    port = free_port()
    server = TcpFakeServer(("127.0.0.1", port), server_type="redis")
    server.RequestHandlerClass = Handler
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        server.shutdown()
        server.server_close()


@contextmanager
def demo_redis(url: str) -> Iterator[str]:
    """The configured Redis when it answers, else the embedded one."""
    if redis_answers(url):
        click.echo(f"Using Redis at {redacted_url(url)}")
        yield url
        return
    click.echo(f"No Redis answers at {redacted_url(url)}; starting an embedded Redis-compatible server (fakeredis)")
    with embedded_redis() as embedded:
        yield embedded


@contextmanager
def running_worker(url: str, log_path: str) -> Iterator[subprocess.Popen[bytes]]:
    """A real `celery -A worker worker` process against `url`."""
    env = {
        **os.environ,
        "TRIGGER_REDIS_URL": url,
        "TRIGGER_QUEUE": DEMO_QUEUE,
        "ZENML_ANALYTICS_OPT_IN": "false",
        "TRIGGER_LOG_FORMAT": "json",
    }
    command = [sys.executable, "-m", "celery", "-A", "worker", "worker", "--pool", "solo", "--loglevel", "WARNING"]
    with open(log_path, "wb") as log:
        process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        yield process
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()


def demo_requests(run_tag: str) -> list[tuple[str, dict[str, Any]]]:
    """What the demo sends: a default run, an override, an invalid request and a duplicate."""
    key = f"demo:{run_tag}"
    return [
        ("default run", {"idempotency_key": key}),
        ("override: gradient boosting", {"steps": {"train_model": {"model_type": "gradient_boosting"}}}),
        (
            "invalid request",
            {
                "parameters": {"model_type": "linear_regression"},
                "steps": {"train_model": {"datasets": "s3://x"}, "tune_model": {"trials": 3}},
            },
        ),
        ("duplicate of the default run", {"idempotency_key": key}),
    ]


def describe(state: RequestState) -> str:
    """One readable line (plus error details) for a final state."""
    line = f"{state.status.value}"
    if state.metrics and "accuracy" in state.metrics:
        line += f", accuracy {state.metrics['accuracy']:.3f}"
    if state.run_id:
        line += f", ZenML run {state.run_id}"
    if state.duplicate_of:
        line += f", covered by {state.duplicate_of}"
    if state.error:
        details = "".join(f"\n      {d['path'] or '(message)'}: {d['problem']}" for d in state.error.details)
        line += f"\n      {state.error.type}{details or ': ' + state.error.message}"
    return line


@click.command()
@click.option("--timeout", default=300.0, show_default=True, help="Seconds to wait for each request.")
def demo(timeout: float) -> None:
    """Send a few requests through a real worker and print each outcome."""
    settings = ProducerSettings()
    log_path = os.path.join(tempfile.mkdtemp(prefix="trigger-demo-"), "worker.log")
    with demo_redis(settings.redis_url) as url, running_worker(url, log_path) as worker:
        click.echo(f"Started a worker (pid {worker.pid}); its log: {log_path}")
        client = TriggerClient.from_settings(ProducerSettings(redis_url=url, queue=DEMO_QUEUE, enqueue_timeout=2))
        sent = [
            (label, client.trigger("training_pipeline", source="demo", **kw))
            for label, kw in demo_requests(uuid.uuid4().hex[:8])
        ]
        for label, request_id in sent:
            click.echo(f"  sent {label}: {request_id}")
        click.echo("Waiting for outcomes (the first run also creates the local ZenML store)...")
        for label, request_id in sent:
            state = _wait(client, request_id, timeout, worker)
            click.echo(f"  {label}: {describe(state)}")


def _wait(client: TriggerClient, request_id: str, timeout: float, worker: subprocess.Popen[bytes]) -> RequestState:
    deadline = time.monotonic() + timeout
    state = client.status(request_id)
    while not state.status.terminal and time.monotonic() < deadline:
        if worker.poll() is not None:
            raise click.ClickException(f"the worker exited with code {worker.returncode}; see its log")
        state = client.wait(request_id, 1.0)
    return state
