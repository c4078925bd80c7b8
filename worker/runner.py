"""The ZenML backend: run a validated plan in this warm process and report the outcome.

With the default local orchestrator the run happens in-process; with a remote
stack ZenML submits it and this call returns once the orchestrator reports back.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from typing import Any

from pipelines.registry import RegisteredPipeline
from producers.errors import TriggerError
from worker.errors import PipelineRunFailed, RunSubmissionFailed, StoreUnavailable
from worker.validation import RunPlan


@dataclass(frozen=True)
class RunOutcome:
    """What ZenML reports about a finished run."""

    run_id: str
    run_name: str
    status: str
    metrics: dict[str, Any] | None = None

    @property
    def succeeded(self) -> bool:
        """True when ZenML marked the run completed."""
        return self.status == "completed"


def transient_types() -> tuple[type[BaseException], ...]:
    """Exceptions that mean "a dependency was unavailable", not "the request is wrong"."""
    import requests
    import sqlalchemy.exc

    return (
        ConnectionError,
        TimeoutError,
        socket.timeout,
        sqlalchemy.exc.OperationalError,
        sqlalchemy.exc.DisconnectionError,
        requests.ConnectionError,
        requests.Timeout,
    )


def classify(exc: BaseException, run_name: str, run_id: str | None) -> TriggerError:
    """Map an exception raised by a ZenML run onto the error taxonomy."""
    if isinstance(exc, TriggerError):
        return exc
    described = f"{type(exc).__name__}: {exc}"
    if isinstance(exc, transient_types()):
        kind = StoreUnavailable if run_id is None else RunSubmissionFailed
        return kind(f"run {run_name}: {described}")
    return PipelineRunFailed(f"run {run_name} failed: {described}", run_id=run_id, run_name=run_name)


class ZenMLRunner:
    """Runs registered pipelines through ZenML with the configured store and stack."""

    def run(self, entry: RegisteredPipeline, plan: RunPlan, run_name: str) -> RunOutcome:
        """Run and wait; raise `PipelineRunFailed` or a transient error on failure."""
        options: dict[str, Any] = {"run_name": run_name, "steps": plan.step_configuration()}
        if "execution_mode" not in entry.pipeline.configuration.model_fields_set:
            # Fail fast so the failing step's own exception reaches `classify`, typed, instead of
            # ZenML's generic "Pipeline run has failed" RuntimeError.
            options["execution_mode"] = "fail_fast"
        configured = entry.pipeline.with_options(**options)
        try:
            run = configured(**plan.parameters)
        except Exception as exc:
            raise classify(exc, run_name, self._run_id(run_name)) from exc
        outcome = self._outcome(run, entry)
        if not outcome.succeeded:
            raise PipelineRunFailed(f"run {run_name} ended {outcome.status}", run_id=outcome.run_id, run_name=run_name)
        return outcome

    def find(self, run_name: str, entry: RegisteredPipeline) -> RunOutcome | None:
        """The outcome of an earlier attempt's run, if ZenML has it."""
        from zenml.client import Client

        try:
            run = Client().get_pipeline_run(run_name, allow_name_prefix_match=False)
        except KeyError:
            return None
        return self._outcome(run, entry)

    def _run_id(self, run_name: str) -> str | None:
        from zenml.client import Client

        try:
            return str(Client().get_pipeline_run(run_name, allow_name_prefix_match=False).id)
        except Exception:  # noqa: BLE001 - the run may not exist, or the store may be down
            return None

    def _outcome(self, run: Any, entry: RegisteredPipeline) -> RunOutcome:
        status = getattr(run.status, "value", str(run.status))
        return RunOutcome(
            run_id=str(run.id), run_name=run.name, status=status, metrics=_metrics(run, entry.metrics_step)
        )


def _metrics(run: Any, step_name: str) -> dict[str, Any] | None:
    """The metrics step's output when it is a flat dict of numbers, else None."""
    try:
        value = run.steps[step_name].output.load()
    except Exception:  # noqa: BLE001 - a pipeline without a metrics step simply has none
        return None
    if isinstance(value, dict) and all(isinstance(v, (int, float)) for v in value.values()):
        return {str(k): float(v) for k, v in value.items()}
    return None
