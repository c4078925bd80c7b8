"""Integration fixtures: the real Redis, real `celery worker` processes, a real ZenML local store.

A missing Redis fails these tests (never skips them), so CI cannot go green without it.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest
import redis

from producers import TriggerClient
from producers.settings import ProducerSettings
from producers.state import RequestState
from tests.support.pipelines import TEST_PIPELINES
from tests.support.sentinels import SentinelGroup

REPO = Path(__file__).resolve().parents[2]


def worker_database(base: str, worker: str | None) -> str:
    """`base` for a run on one process (or xdist's `gw0`), the next database for `gw1` and so on:
    every test empties its database, so two test processes must never share one."""
    index = int(worker.removeprefix("gw")) if worker and worker.startswith("gw") else 0
    parts = urlsplit(base)
    database = int(parts.path.strip("/") or 0) + index
    return urlunsplit(parts._replace(path=f"/{database}"))


REDIS_URL = worker_database(
    os.environ.get("TRIGGER_TEST_REDIS_URL", "redis://127.0.0.1:6379/9"), os.environ.get("PYTEST_XDIST_WORKER")
)

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
    from zenml.utils import source_utils

    GlobalConfiguration._reset_instance()
    Client._reset_instance()
    # ZenML finds source files from the main module's directory; a pytest-xdist process's main module
    # has none (in this process only: the workers the tests start find theirs as a user's would)
    source_utils.set_custom_source_root(str(REPO))


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
    key: tuple[str, str] | None = None
    """(key id, secret) the stack's client signs with; None: it does not sign."""

    @property
    def settings(self) -> ProducerSettings:
        key_id, secret = self.key or (None, None)
        return ProducerSettings(
            redis_url=self.redis_url, queue=self.queue, enqueue_timeout=2, key_id=key_id, key_secret=secret
        )

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


@pytest.fixture
def sentinel_group(tmp_path: Path) -> Iterator[SentinelGroup]:
    """A primary, a replica and three sentinels of this test's own on free loopback ports; all killed afterwards."""
    workdir = tmp_path / "sentinel-group"
    workdir.mkdir()
    with SentinelGroup(workdir) as group:
        yield group


def zenml_runs(pipeline_name: str | None = None) -> list[Any]:
    """Every run in this test's ZenML store (optionally of one pipeline)."""
    from zenml.client import Client

    runs = Client().list_pipeline_runs(size=1000, hydrate=True)
    return [run for run in runs if pipeline_name is None or run.pipeline.name == pipeline_name]


@dataclass(frozen=True)
class SigningKeys:
    """A keys file for a test: `ops` may trigger anything; `drift-monitor` only `training_pipeline` with
    `data_url` and `n_estimators`. Each value is (key id, secret); ops's secret reaches the worker as `env:`."""

    path: Path
    ops: tuple[str, str]
    drift: tuple[str, str]
    env: dict[str, str]


@pytest.fixture
def signing_keys(tmp_path: Path) -> SigningKeys:
    ops, drift = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
    path = tmp_path / "keys.yaml"
    path.write_text(
        f"""keys:
  - id: ops
    secrets: ["env:TRIGGER_TEST_OPS_SECRET"]
    pipelines: ["*"]
    templates: ["*"]
  - id: drift-monitor
    secrets: ["{drift}"]
    pipelines: [training_pipeline]
    parameters: [parameters.data_url, steps.train_model.parameters.n_estimators]
"""
    )
    env = {"TRIGGER_REQUIRE_SIGNED": "true", "TRIGGER_KEYS_FILE": str(path), "TRIGGER_TEST_OPS_SECRET": ops}
    return SigningKeys(path=path, ops=("ops", ops), drift=("drift-monitor", drift), env=env)


@pytest.fixture
def signed_stack(stack: Stack, signing_keys: SigningKeys) -> Stack:
    """The stack with workers that require signed requests, and a client that signs with the `ops` key."""
    stack.env_overrides.update(signing_keys.env)
    stack.key = signing_keys.ops
    return stack


ACL_FILE = REPO / "examples" / "redis" / "users.acl"


@dataclass(frozen=True)
class SecuredRedis:
    """A redis-server of the test's own, TLS only, with the README's ACL users (`examples/redis/users.acl`)."""

    port: int
    ca_file: Path
    passwords: dict[str, str]

    def url(self, user: str | None, ca_in_url: bool = True) -> str:
        """`rediss://` for `user` (None: no credentials), verifying the server against the test CA: named in
        the URL, or else found the way the system's CAs are (`SSL_CERT_FILE`)."""
        credentials = f"{user}:{self.passwords[user]}@" if user else ""
        options = f"?ssl_cert_reqs=required&ssl_ca_certs={self.ca_file}" if ca_in_url else ""
        return f"rediss://{credentials}127.0.0.1:{self.port}/0{options}"


@pytest.fixture
def secured_redis(tmp_path: Path) -> Iterator[SecuredRedis]:
    """Started on a free loopback port, stopped afterwards; a missing redis-server or openssl fails the test."""
    binary, openssl = shutil.which("redis-server"), shutil.which("openssl")
    if binary is None or openssl is None:
        pytest.fail("the Redis ACL and TLS test needs redis-server and openssl on PATH")
    workdir = tmp_path / "secured-redis"
    workdir.mkdir()
    passwords = {"trigger-producer": secrets.token_hex(16), "trigger-worker": secrets.token_hex(16)}
    acl = ACL_FILE.read_text()
    for user, password in passwords.items():
        acl = acl.replace(f">{user.removeprefix('trigger-')}-password-CHANGE-ME", f">{password}")
    (workdir / "users.acl").write_text(acl)
    _make_certificates(openssl, workdir)
    port = _free_port()
    server = subprocess.Popen(
        _server_command(binary, port, workdir), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    secured = SecuredRedis(port=port, ca_file=workdir / "ca.crt", passwords=passwords)
    try:
        _wait_for_tls(secured, server)
        yield secured
    finally:
        server.terminate()
        server.wait(timeout=10)


def _server_command(binary: str, port: int, workdir: Path) -> list[str]:
    """TLS only (no plain port), the ACL file, nothing persisted."""
    options = {
        "port": "0",
        "tls-port": str(port),
        "bind": "127.0.0.1",
        "save": "",
        "appendonly": "no",
        "dir": str(workdir),
        "tls-cert-file": str(workdir / "server.crt"),
        "tls-key-file": str(workdir / "server.key"),
        "tls-ca-cert-file": str(workdir / "ca.crt"),
        "tls-auth-clients": "no",
        "aclfile": str(workdir / "users.acl"),
    }
    return [binary, *(part for name, value in options.items() for part in (f"--{name}", value))]


def _make_certificates(openssl: str, workdir: Path) -> None:
    """A throwaway CA and a server certificate for 127.0.0.1, signed by it."""

    def run(*args: str) -> None:
        subprocess.run([openssl, *args], cwd=workdir, check=True, capture_output=True)

    new_key = ("-newkey", "rsa:2048", "-nodes")
    run("req", "-x509", *new_key, "-days", "1", "-subj", "/CN=trigger-test-ca", "-keyout", "ca.key", "-out", "ca.crt")
    run("req", *new_key, "-subj", "/CN=127.0.0.1", "-keyout", "server.key", "-out", "server.csr")
    (workdir / "san.cnf").write_text("subjectAltName=IP:127.0.0.1\n")
    signed_by_ca = ("-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial", "-days", "1", "-extfile", "san.cnf")
    run("x509", "-req", "-in", "server.csr", *signed_by_ca, "-out", "server.crt")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_for_tls(secured: SecuredRedis, server: subprocess.Popen[bytes], timeout: float = 10) -> None:
    client = redis.Redis.from_url(secured.url("trigger-producer"), socket_connect_timeout=1)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail(f"redis-server exited with {server.returncode} (TLS or ACL file refused?)")
        try:
            client.ping()
            return
        except redis.RedisError:
            time.sleep(0.1)
    pytest.fail("the secured redis-server did not answer within 10 s")
