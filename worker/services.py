"""What the request path talks to, built once per worker process (`worker.runtime`) or by a test."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from pipelines.registry import PipelineRegistry
from producers.state import StateStore
from worker.dead_letters import DeadLetterStore
from worker.idempotency import IdempotencyClaims
from worker.lease import Leases
from worker.outcomes import Observer, Unobserved
from worker.runner import ZenMLRunner
from worker.schedule import RetrySchedule
from worker.server_backend import ServerBackend
from worker.settings import WorkerSettings
from worker.templates import TemplateStore


@dataclass
class Services:
    """Everything the processor talks to, built once per worker process."""

    settings: WorkerSettings
    registry: PipelineRegistry
    states: StateStore
    dead_letters: DeadLetterStore
    claims: IdempotencyClaims
    leases: Leases
    schedule: RetrySchedule
    runner: ZenMLRunner
    templates: TemplateStore
    server: ServerBackend
    stopping: Callable[[], bool] = field(default=lambda: False)
    """Whether this process is being stopped by a shutdown (see `worker.shutdown.stopping`)."""
    checkpoint: Callable[[str, str], None] = field(default=lambda point, request_id: None)
    """Called at each named step of the walk with the request id: where tests pause, crash or break Redis."""
    observer: Observer = field(default_factory=Unobserved)
    """Told of every recorded step (the worker's metrics, `worker.metrics`)."""
