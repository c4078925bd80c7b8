"""Integration fixtures: the real Redis, real `celery worker` processes, a real ZenML local store.

A missing Redis fails these tests (never skips them), so CI cannot go green without it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import redis

from producers import TriggerClient
from producers.settings import ProducerSettings
from producers.state import RequestState
from tests.support.pipelines import TEST_PIPELINES

REPO = Path(__file__).resolve().parents[2]
REDIS_URL = os.environ.get("TRIGGER_TEST_REDIS_URL", "redis://127.0.0.1:6379/9")

pytestmark = pytest.mark.integration


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "integration" in str(item.fspath):
            item.add_marker(pytest.mark.integration)


@pytest.fixture
def redis_url() -> str:
    """The real Redis test database, emptied; a failure if Redis does not answer."""
    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2)
    try:
        client.ping()
    except redis.RedisError as exc:
        pytest.fail(f"integration tests need Redis at {REDIS_URL}: {exc}")
    client.flushdb()
    return REDIS_URL


@pytest.fixture
def zenml_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A fresh ZenML config/store for this test, also used by this process to inspect runs."""
    path = tmp_path / "zenml"
    path.mkdir()
    monkeypatch.setenv("ZENML_CONFIG_PATH", str(path))
    monkeypatch.setenv("ZENML_ANALYTICS_OPT_IN", "false")
    _reset_zenml()
    yield path
    _reset_zenml()


def _reset_zenml() -> None:
    from zenml.client import Client
    from zenml.config.global_config import GlobalConfiguration

    GlobalConfiguration._reset_instance()
    Client._reset_instance()


@dataclass
class Stack:
    """What a test talks to: the queue settings, a client, and the workers it started."""

    redis_url: str
    queue: str
    zenml_path: Path
    log_dir: Path
    env_overrides: dict[str, str] = field(default_factory=dict)
    workers: list[subprocess.Popen[bytes]] = field(default_factory=list)
    probes: list[str] = field(default_factory=list)

    @property
    def settings(self) -> ProducerSettings:
        return ProducerSettings(redis_url=self.redis_url, queue=self.queue, enqueue_timeout=2)

    @property
    def client(self) -> TriggerClient:
        return TriggerClient.from_settings(self.settings)

    @property
    def redis(self) -> redis.Redis:
        return redis.Redis.from_url(self.redis_url)

    def env(self, **extra: str) -> dict[str, str]:
        return {
            **os.environ,
            "TRIGGER_REDIS_URL": self.redis_url,
            "TRIGGER_QUEUE": self.queue,
            "TRIGGER_PIPELINES": TEST_PIPELINES,
            "TRIGGER_LOG_FORMAT": "json",
            "ZENML_CONFIG_PATH": str(self.zenml_path),
            "ZENML_ANALYTICS_OPT_IN": "false",
            "ZENML_LOGGING_COLORS_DISABLED": "true",
            "PYTHONPATH": str(REPO),
            **self.env_overrides,
            **extra,
        }

    def start_worker(
        self, name: str = "w1", wait: bool = True, pool: str = "solo", **extra: str
    ) -> subprocess.Popen[bytes]:
        """A real `celery -A worker worker` process; waits until it has processed a probe request."""
        log = open(self.log_dir / f"{name}.log", "ab")
        command = [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "worker",
            "worker",
            "--pool",
            pool,
            "--loglevel",
            "INFO",
            "-n",
            f"{name}-{uuid.uuid4().hex[:6]}@%h",
        ]
        process = subprocess.Popen(command, cwd=REPO, env=self.env(**extra), stdout=log, stderr=subprocess.STDOUT)
        self.workers.append(process)
        if wait:
            self.wait_ready(process)
        return process

    def wait_ready(self, process: subprocess.Popen[bytes], timeout: float = 90) -> None:
        probe = self.client.trigger("no_such_pipeline", source="readiness-probe")
        self.probes.append(probe)
        state = self.wait(probe, timeout, process)
        assert state.status.terminal, f"worker not ready: {self.logs()}"

    def wait(self, request_id: str, timeout: float = 120, process: Any = None) -> RequestState:
        """The request's state once terminal (or at the timeout). Raw pushes have no state until the
        worker records one, so an unknown id is waited for too."""
        deadline = time.monotonic() + timeout
        state = self.client.states.get(request_id)
        while (state is None or not state.status.terminal) and time.monotonic() < deadline:
            if process is not None and process.poll() is not None:
                raise AssertionError(f"worker exited with {process.returncode}:\n{self.logs()}")
            time.sleep(0.1)
            state = self.client.states.get(request_id)
        assert state is not None, f"no state recorded for {request_id} within {timeout}s:\n{self.logs()}"
        return state

    def wait_all(self, request_ids: list[str], timeout: float = 180) -> dict[str, RequestState]:
        deadline = time.monotonic() + timeout
        states = {}
        for request_id in request_ids:
            states[request_id] = self.wait(request_id, max(0.1, deadline - time.monotonic()))
        return states

    def logs(self) -> str:
        """The end of each worker's log, for assertion messages."""
        return "\n".join(p.read_text(errors="replace")[-4000:] for p in sorted(self.log_dir.glob("*.log")))

    def logged(self, event: str) -> bool:
        """Whether any worker logged `event` at any point (the whole logs, not their ends)."""
        return any(event in p.read_text(errors="replace") for p in self.log_dir.glob("*.log"))

    def stop(self) -> None:
        for process in self.workers:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.workers:
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@pytest.fixture
def stack(redis_url: str, zenml_store: Path, tmp_path: Path) -> Iterator[Stack]:
    """A per-test queue on the real Redis and a fresh ZenML store; workers stopped afterwards."""
    log_dir = tmp_path / "logs"
    log_dir.mkdir()
    stack = Stack(redis_url=redis_url, queue=f"test-{uuid.uuid4().hex[:8]}", zenml_path=zenml_store, log_dir=log_dir)
    try:
        yield stack
    finally:
        stack.stop()


def zenml_runs(pipeline_name: str | None = None) -> list[Any]:
    """Every run in this test's ZenML store (optionally of one pipeline)."""
    from zenml.client import Client

    runs = Client().list_pipeline_runs(size=1000, hydrate=True)
    return [run for run in runs if pipeline_name is None or run.pipeline.name == pipeline_name]
