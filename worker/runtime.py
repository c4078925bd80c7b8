"""Build the processor's services once per worker process from the settings object."""

from __future__ import annotations

from typing import Any

from pipelines.registry import PipelineRegistry
from producers.client import connect
from producers.state import StateStore
from worker import shutdown
from worker.catalog import CatalogPublisher, list_templates
from worker.dead_letters import DeadLetterStore
from worker.idempotency import IdempotencyClaims
from worker.lease import Leases
from worker.metrics import observer_for
from worker.processing import Processor, Services
from worker.runner import ZenMLRunner
from worker.schedule import RetrySchedule
from worker.server_backend import ServerBackend
from worker.settings import WorkerSettings
from worker.templates import TemplateStore


def build_services(settings: WorkerSettings, registry: PipelineRegistry | None = None) -> Services:
    """Every service the processor needs, wired to one Redis client."""
    client = connect(settings)
    registry = registry or PipelineRegistry.from_paths(settings.pipelines)
    return Services(
        settings=settings,
        registry=registry,
        states=StateStore(client, settings.state_ttl),
        dead_letters=DeadLetterStore.from_settings(client, settings),
        claims=IdempotencyClaims(client, settings.dedup_window),
        leases=Leases(
            client,
            settings.lease_timeout,
            settings.heartbeat_interval,
            state_ttl=settings.state_ttl,
            claim_ttl=settings.dedup_window,
        ),
        schedule=RetrySchedule(client, settings.queue),
        runner=ZenMLRunner(),
        templates=TemplateStore(),
        server=ServerBackend(
            _zenml_client, wait=settings.wait_for_server_runs, poll_interval=settings.server_poll_interval
        ),
        stopping=shutdown.stopping,
        observer=observer_for(settings, registry.names()),
    )


def _zenml_client() -> Any:
    from zenml.client import Client

    return Client()


def build_processor(settings: WorkerSettings, registry: PipelineRegistry | None = None) -> Processor:
    """A processor ready to handle deliveries."""
    return Processor(build_services(settings, registry))


def build_catalog_publisher(processor: Processor) -> CatalogPublisher:
    """The catalog publisher of the worker's main process, over the processor's registry and signatures."""
    services = processor.s
    return CatalogPublisher(
        connect(services.settings),
        services.settings,
        services.registry,
        processor.signature,
        lambda: list_templates(services.templates),
    )
