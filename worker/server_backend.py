"""Templates on a ZenML server: `Client().trigger_pipeline(snapshot...)`, then follow the run.

Used only when ZenML is connected to a server (REST store) and the snapshot is runnable
there; errors at the `Client` boundary are classified like every other error.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from producers.errors import Problem, TriggerError
from worker.errors import PermanentError, PipelineRunFailed, RunSubmissionFailed, UnknownTemplate
from worker.runner import RunOutcome
from worker.validation import step_options

if TYPE_CHECKING:
    from worker.templates import Template

FINISHED = {"completed", "failed", "cached", "cancelled", "stopped"}
SUCCEEDED = {"completed", "cached"}


class TemplateRunRefused(PermanentError):
    """The ZenML server refused to run the template as configured."""


def classify_server_error(exc: BaseException, template: str, run_id: str | None = None) -> TriggerError:
    """Map an exception from the server `Client` calls onto the error taxonomy.

    `run_id` is set while following a submitted run: then a missing entity is the run, not the template.
    """
    import requests
    from zenml import exceptions as zx

    described = f"{type(exc).__name__}: {exc}"
    if isinstance(
        exc, (ConnectionError, TimeoutError, requests.ConnectionError, requests.Timeout, zx.MaxConcurrentTasksError)
    ):
        return RunSubmissionFailed(f"template {template}: the ZenML server is unavailable: {described}")
    if isinstance(exc, KeyError) and run_id is not None:
        return PipelineRunFailed(f"template {template}: run {run_id} no longer exists on the server", run_id=run_id)
    if isinstance(exc, KeyError):
        return UnknownTemplate(details=[Problem("template", f"{template}: the server has no such snapshot")])
    if isinstance(exc, zx.AuthorizationException):
        return TemplateRunRefused(f"template {template}: not authorized on the ZenML server: {described}")
    return TemplateRunRefused(f"template {template}: the ZenML server refused the run: {described}")


class ServerBackend:
    """Runs templates through a ZenML server's snapshot API."""

    def __init__(self, client_factory: Callable[[], Any], wait: bool = True, poll_interval: float = 5.0) -> None:
        self.client_factory = client_factory
        self.wait = wait
        self.poll_interval = poll_interval

    def available(self, template: Template) -> bool:
        """True when ZenML talks to a server and the snapshot is runnable there."""
        from zenml.enums import StoreType

        return template.runnable and self.client_factory().zen_store.type == StoreType.REST

    def run(
        self,
        template: Template,
        parameters: dict[str, Any],
        steps: dict[str, dict[str, Any]],
        run_name: str,
        on_submitted: Callable[[str], None] | None = None,
    ) -> RunOutcome:
        """Submit the run; follow it to its end unless configured not to wait.

        `on_submitted(run_id)` is called as soon as the server accepted the run, so a retry after a
        polling blip follows that run (`follow`) instead of submitting another.
        """
        configuration = run_configuration(template.run_config, parameters, steps, run_name)
        try:
            run = self.client_factory().trigger_pipeline(
                snapshot_name_or_id=template.snapshot_id, run_configuration=configuration
            )
        except Exception as exc:  # every failure is classified at this boundary
            raise classify_server_error(exc, template.ref) from exc
        if on_submitted is not None:
            on_submitted(str(run.id))
        if not self.wait:
            return RunOutcome(run_id=str(run.id), run_name=run.name, status="submitted")
        return self.follow(str(run.id), run.name, template.ref)

    def follow(self, run_id: str, run_name: str, ref: str) -> RunOutcome:
        """Poll a submitted run until ZenML reports it finished."""
        while True:
            try:
                run = self.client_factory().get_pipeline_run(run_id)
            except Exception as exc:  # a blip while polling: classified, and retried as transient
                raise classify_server_error(exc, ref, run_id=run_id) from exc
            status = getattr(run.status, "value", str(run.status))
            if status in FINISHED:
                break
            time.sleep(self.poll_interval)
        if status not in SUCCEEDED:
            raise PipelineRunFailed(
                f"run {run_name} of template {ref} ended {status}", run_id=run_id, run_name=run_name
            )
        return RunOutcome(run_id=run_id, run_name=run_name, status="completed")


def run_configuration(
    base: dict[str, Any], parameters: dict[str, Any], steps: dict[str, dict[str, Any]], run_name: str
) -> dict[str, Any]:
    """ZenML's run configuration for a server-side template run."""
    configuration = {k: v for k, v in base.items() if k not in ("steps", "parameters")}
    configuration.update(
        {"run_name": run_name, "parameters": parameters, "steps": step_options(steps, base.get("steps"))}
    )
    return configuration
