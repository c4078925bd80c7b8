"""Fixtures for the fast unit tier: fakeredis instead of Redis, a scripted runner instead of ZenML runs."""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import fakeredis
import pytest

# Test modules import ZenML at collection time, before any fixture runs, and ZenML reads its
# global configuration once per process: point that first import at a throwaway directory,
# never at the developer's own ZenML config, and keep analytics off. Each test then also gets
# its own config path from the autouse fixture below.
os.environ["ZENML_ANALYTICS_OPT_IN"] = "false"
os.environ["ZENML_CONFIG_PATH"] = tempfile.mkdtemp(prefix="zenml-unit-")
# ZenML finds source files (a template's pipeline) from the main module's directory, and a
# pytest-xdist process's main module has none: name the repository, where `pipelines` lives.
# (ZenML reads the variable once, at import: in a run with the integration tier it may already be in.)
SOURCE_ROOT = str(Path(__file__).resolve().parents[2])
os.environ.setdefault("ZENML_CUSTOM_SOURCE_ROOT", SOURCE_ROOT)


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    """No `TRIGGER_*` variable from the host leaks in; ZenML is told to stay local and quiet."""
    for name in list(os.environ):
        if name.startswith("TRIGGER_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("ZENML_ANALYTICS_OPT_IN", "false")
    monkeypatch.setenv("ZENML_CONFIG_PATH", str(tmp_path / "zenml"))
    if "zenml.utils.source_utils" in sys.modules:
        sys.modules["zenml.utils.source_utils"].set_custom_source_root(SOURCE_ROOT)


@pytest.fixture(autouse=True)
def _no_metrics_directory(monkeypatch: pytest.MonkeyPatch) -> None:
    """A test that runs the worker's start hook must not switch this whole test process to
    prometheus-client's multiprocess mode (`worker.metrics_server` covers that on its own)."""
    tasks = sys.modules.get("worker.tasks")
    if tasks is not None:
        monkeypatch.setattr(tasks, "_metrics", None)
        monkeypatch.setattr(tasks, "MetricsServer", _NoMetrics)


class _NoMetrics:
    """Stands in for `worker.metrics_server.MetricsServer` in the worker's start hook: metrics off."""

    @staticmethod
    def prepare(settings: Any) -> None:
        return None


@pytest.fixture
def fake_redis() -> fakeredis.FakeRedis:
    """A private in-memory Redis (each FakeRedis() has its own server)."""
    return fakeredis.FakeRedis()


class FakeRunner:
    """Same interface as `worker.runner.ZenMLRunner`; each call pops the next scripted result.

    A script item is a `RunOutcome` to return or an exception to raise; with no script
    left, the run succeeds with `{"accuracy": 0.9}`.
    """

    def __init__(self, *script: Any) -> None:
        self.script = list(script)
        self.calls: list[tuple[str, Any, str]] = []
        self.found: dict[str, Any] = {}
        self.find_calls: list[str] = []
        self.links: list[tuple[str, str, str]] = []
        self.abandoned: list[tuple[str, str]] = []
        self.provenances: list[Any] = []

    def run(self, entry: Any, plan: Any, run_name: str, run_config: Any = None, provenance: Any = None) -> Any:
        from worker.runner import RunOutcome

        self.calls.append((entry.name, plan, run_name))
        self.provenances.append(provenance)
        result = self.script.pop(0) if self.script else None
        if isinstance(result, BaseException):
            raise result
        return result or RunOutcome(
            run_id=f"run-{len(self.calls)}", run_name=run_name, status="completed", metrics={"accuracy": 0.9}
        )

    def link(self, outcome: Any, template_ref: str, snapshot_id: str) -> None:
        self.links.append((outcome.run_id, template_ref, snapshot_id))

    def find(self, run_name: str, entry: Any) -> Any:
        self.find_calls.append(run_name)
        return self.found.get(run_name)

    def run_id(self, run_name: str) -> str | None:
        found = self.found.get(run_name)
        return found.run_id if found is not None else None

    def abandon(self, run_name: str, reason: str) -> str | None:
        self.abandoned.append((run_name, reason))
        return f"abandoned-{run_name}"

    def running_step(self, run_name: str) -> str | None:
        return None


@pytest.fixture(scope="session")
def registry() -> Any:
    """The bundled registry (the tutorial's training pipeline)."""
    from pipelines.registry import PipelineRegistry

    return PipelineRegistry.from_paths()


@pytest.fixture
def worker_settings() -> Any:
    """Explicit worker settings with small, readable retry numbers."""
    from worker.settings import WorkerSettings

    return WorkerSettings(
        redis_url="redis://unused.invalid:6379/0",
        max_attempts=3,
        retry_base_delay=4.0,
        retry_max_delay=60.0,
        dead_letter_max_size=100,
    )


@pytest.fixture
def runner() -> FakeRunner:
    return FakeRunner()


@pytest.fixture
def make_services(fake_redis: fakeredis.FakeRedis, registry: Any, worker_settings: Any) -> Callable[..., Any]:
    """Build `worker.processing.Services` the way `worker.runtime.build_services` does, on fakeredis."""

    def build(runner: Any, settings: Any = None, client: Any = None, templates: Any = None, server: Any = None) -> Any:
        from producers.state import StateStore
        from worker.dead_letters import DeadLetterStore
        from worker.idempotency import IdempotencyClaims
        from worker.lease import Leases
        from worker.processing import Services
        from worker.schedule import RetrySchedule

        settings = settings or worker_settings
        client = client if client is not None else fake_redis
        return Services(
            settings=settings,
            registry=registry,
            states=StateStore(client, settings.state_ttl),
            dead_letters=DeadLetterStore(client, settings.dead_letter_max_size, settings.dead_letter_max_age),
            claims=IdempotencyClaims(client, settings.dedup_window),
            leases=Leases(client, settings.lease_timeout, settings.heartbeat_interval),
            schedule=RetrySchedule(client, settings.queue),
            runner=runner,
            templates=templates if templates is not None else FakeTemplates(),
            server=server if server is not None else FakeServer(),
        )

    return build


class FakeTemplates:
    """Same interface as `worker.templates.TemplateStore.get`, over a dict of templates by ref and name."""

    def __init__(self, *templates: Any) -> None:
        self.by_ref = {t.ref: t for t in templates}
        for template in templates:
            self.by_ref[template.name] = template

    def get(self, ref: str) -> Any:
        from producers.errors import Problem
        from worker.errors import UnknownTemplate

        if ref not in self.by_ref:
            raise UnknownTemplate(details=[Problem("template", f"template {ref!r} does not exist")])
        return self.by_ref[ref]


class FakeServer:
    """A ZenML server backend that is never available unless told so."""

    def __init__(self, available: bool = False, outcome: Any = None) -> None:
        self._available = available
        self.outcome = outcome
        self.calls: list[tuple[Any, ...]] = []

    def available(self, template: Any) -> bool:
        return self._available

    def run(self, template: Any, parameters: Any, steps: Any, run_name: str, on_submitted: Any = None) -> Any:
        self.calls.append((template.ref, parameters, steps, run_name))
        if isinstance(self.outcome, BaseException):
            raise self.outcome
        return self.outcome

    def follow(self, run_id: str, run_name: str, ref: str) -> Any:
        self.calls.append(("follow", run_id, run_name, ref))
        return self.outcome


@pytest.fixture
def processor(make_services: Callable[..., Any], runner: FakeRunner) -> Iterator[Any]:
    """A processor over fakeredis with the default `runner` fixture."""
    from worker.processing import Processor

    yield Processor(make_services(runner))
