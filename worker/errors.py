"""Worker-side errors, all rooted in `producers.errors.TriggerError` and split permanent/transient."""

from __future__ import annotations

from producers.errors import (
    Forbidden,
    InvalidRequest,
    MalformedRequest,
    PayloadTooLarge,
    PermanentError,
    Problem,
    TransientError,
    TriggerError,
    Unauthorized,
)

__all__ = [
    "Forbidden",
    "InvalidParameters",
    "InvalidRequest",
    "LockedOverride",
    "MalformedRequest",
    "PayloadTooLarge",
    "PermanentError",
    "PipelineRunFailed",
    "Problem",
    "RunSubmissionFailed",
    "RunTimeout",
    "StoreUnavailable",
    "TransientError",
    "TriggerError",
    "Unauthorized",
    "UnknownPipeline",
    "UnknownTemplate",
    "WorkerLost",
    "WorkerShutdown",
]


class UnknownPipeline(InvalidRequest):
    """The request names a pipeline that is not registered."""


class UnknownTemplate(InvalidRequest):
    """The request names a template that does not exist or cannot be used."""


class InvalidParameters(InvalidRequest):
    """The request's parameters do not fit the pipeline's signature."""


class LockedOverride(InvalidRequest):
    """The request changes a value the template locks."""


class PipelineRunFailed(PermanentError):
    """The pipeline ran and failed."""

    def __init__(self, message: str | None = None, *, run_id: str | None = None, run_name: str | None = None) -> None:
        self.run_id = run_id
        self.run_name = run_name
        super().__init__(message)


class StoreUnavailable(TransientError):
    """The ZenML store or Redis could not be reached."""


class RunSubmissionFailed(TransientError):
    """The orchestrator or ZenML server did not accept the run; it may later."""


class RunTimeout(PipelineRunFailed):
    """The run outlasted its time limit and was stopped."""


class WorkerLost(TransientError):
    """An attempt died with its worker (killed, out of memory, or the machine went away)."""


class WorkerShutdown(TransientError):
    """The worker shut down during the run; the request runs again, on this worker's successor or another."""
