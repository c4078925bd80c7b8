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
from worker.errors import PipelineRunFailed, RunSubmissionFailed, RunTimeout, StoreUnavailable
from worker.validation import RunPlan, step_options


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


def configured_pipeline(
    pipeline: Any,
    steps: dict[str, dict[str, Any]],
    run_config: dict[str, Any],
    run_name: str | None = None,
    extra: dict[str, Any] | None = None,
) -> Any:
    """A copy of `pipeline` with step parameters and a run configuration (minus its parameters) applied.

    Parameters never go through ZenML's own config file: the worker has validated and mapped
    them, and a parameter fed by a pipeline argument would conflict there.
    """
    options = {k: v for k, v in run_config.items() if k not in ("steps", "parameters", "run_name")}
    if "execution_mode" not in options and "execution_mode" not in pipeline.configuration.model_fields_set:
        # Fail fast so the failing step's own exception reaches `classify`, typed, instead of
        # ZenML's generic "Pipeline run has failed" RuntimeError.
        options["execution_mode"] = "fail_fast"
    if extra:
        options["extra"] = {**(pipeline.configuration.extra or {}), **extra}
    if run_name:
        options["run_name"] = run_name
    return pipeline.with_options(steps=step_options(steps, run_config.get("steps")), **options)


@dataclass(frozen=True)
class Provenance:
    """Why a run started, recorded on it in ZenML so the dashboard can answer "why did this run start?"."""

    metadata: dict[str, Any]
    tags: tuple[str, ...] = ()


class ZenMLRunner:
    """Runs registered pipelines through ZenML with the configured store and stack."""

    def run(
        self,
        entry: RegisteredPipeline,
        plan: RunPlan,
        run_name: str,
        run_config: dict[str, Any] | None = None,
        provenance: Provenance | None = None,
    ) -> RunOutcome:
        """Run and wait; raise `PipelineRunFailed` or a transient error on failure."""
        config = {**(run_config or {}), "tags": [*(run_config or {}).get("tags", []), *(provenance or _NONE).tags]}
        configured = configured_pipeline(entry.pipeline, plan.steps, config, run_name=run_name)
        try:
            run = configured(**plan.parameters)
        except Exception as exc:
            error = classify(exc, run_name, self.run_id(run_name))
            if isinstance(error, RunTimeout):
                error.run_id = self.abandon(run_name, error.message)
            raise error from exc
        finally:
            self.annotate(run_name, provenance)
        outcome = self._outcome(run, entry)
        if not outcome.succeeded:
            raise PipelineRunFailed(f"run {run_name} ended {outcome.status}", run_id=outcome.run_id, run_name=run_name)
        return outcome

    def link(self, outcome: RunOutcome, template_ref: str, snapshot_id: str) -> None:
        """Record on the ZenML run which template (snapshot) it ran, where ZenML allows it."""
        from zenml import log_metadata

        try:
            log_metadata(
                metadata={"trigger_template": template_ref, "trigger_template_snapshot_id": snapshot_id},
                run_id_name_or_prefix=outcome.run_id,
            )
        except Exception:  # noqa: BLE001 - the link is informative; the run itself succeeded
            return

    def find(self, run_name: str, entry: RegisteredPipeline) -> RunOutcome | None:
        """The outcome of an earlier attempt's run, if ZenML has it (`StoreUnavailable` when it cannot say)."""
        try:
            run = _run_named(run_name)
        except transient_types() as exc:
            raise StoreUnavailable(f"looking up run {run_name}: {type(exc).__name__}: {exc}") from exc
        return None if run is None else self._outcome(run, entry)

    def annotate(self, run_name: str, provenance: Provenance | None) -> None:
        """Record the provenance as the run's metadata, whatever its outcome (best effort: never fails a run)."""
        if provenance is None or not provenance.metadata:
            return
        from zenml import log_metadata

        try:
            log_metadata(metadata=provenance.metadata, run_id_name_or_prefix=run_name)
        except Exception:  # noqa: BLE001 - the run's own outcome matters more than its annotation
            return

    def abandon(self, run_name: str, reason: str) -> str | None:
        """Mark a run nobody will finish (stopped, or its worker died) failed in ZenML; return its id.

        Without this the dashboard shows the run `running` forever. Best effort: the store may be down.
        """
        try:
            run = _run_named(run_name)
            if run is not None and not run.status.is_finished:
                _fail_run(run, reason)
        except Exception:  # noqa: BLE001 - the request's own outcome matters more than the dashboard's
            return None
        return None if run is None else str(run.id)

    def run_id(self, run_name: str) -> str | None:
        """The id of the run with this name, if ZenML has one (best effort: None when the store is down)."""
        try:
            run = _run_named(run_name)
        except Exception:  # noqa: BLE001 - the store may be down; the failure is classified without an id
            return None
        return None if run is None else str(run.id)

    def running_step(self, run_name: str) -> str | None:
        """The step of the run named `run_name` that is running now (the latest started), if any.

        Two small store queries, from the step watch's own thread (see `worker.step_watch`).
        """
        from zenml.client import Client
        from zenml.enums import ExecutionStatus

        run = _run_named(run_name)
        if run is None:
            return None
        steps = Client().list_run_steps(
            pipeline_run_id=run.id, status=ExecutionStatus.RUNNING.value, sort_by="desc:start_time", size=1
        )
        return steps.items[0].name if steps.items else None

    def _outcome(self, run: Any, entry: RegisteredPipeline) -> RunOutcome:
        status = getattr(run.status, "value", str(run.status))
        return RunOutcome(
            run_id=str(run.id), run_name=run.name, status=status, metrics=_metrics(run, entry.metrics_step)
        )


_NONE = Provenance(metadata={})


def _run_named(run_name: str) -> Any:
    """The ZenML run with exactly this name, or None."""
    from zenml.client import Client

    try:
        return Client().get_pipeline_run(run_name, allow_name_prefix_match=False)
    except KeyError:
        return None


def _fail_run(run: Any, reason: str) -> None:
    """Publish the run and its unfinished steps as failed."""
    from zenml.enums import ExecutionStatus
    from zenml.orchestrators import publish_utils

    for step in run.steps.values():
        if not step.status.is_finished:
            publish_utils.publish_failed_step_run(step.id)
    publish_utils.publish_pipeline_run_status_update(run.id, ExecutionStatus.FAILED, status_reason=reason[:250])


def _metrics(run: Any, step_name: str) -> dict[str, Any] | None:
    """The metrics step's output when it is a flat dict of numbers, else None."""
    try:
        value = run.steps[step_name].output.load()
    except Exception:  # noqa: BLE001 - a pipeline without a metrics step simply has none
        return None
    if isinstance(value, dict) and all(isinstance(v, (int, float)) for v in value.values()):
        return {str(k): float(v) for k, v in value.items()}
    return None
