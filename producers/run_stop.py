"""Stopping a running request's ZenML run, for `trigger cancel`, where the orchestrator can.

ZenML stops a run through its orchestrator (`zenml pipeline runs stop`); orchestrators that
cannot stop runs raise `NotImplementedError`, but only after ZenML marked the run `stopping`,
so this asks the orchestrator class first and calls ZenML only when it implements a stop. The
local orchestrator (what the worker uses by default) runs the pipeline inside the worker's own
process and implements none: such a run is left alone, and the reason said.

ZenML is imported only here and only when a running request is cancelled, so the light
producer install (no ZenML) still cancels queued requests and says plainly why it cannot stop
a running one.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from typing import Any, Protocol

from producers.state import RequestState


@dataclass(frozen=True)
class StopResult:
    """Whether the run was asked to stop, and a sentence saying what happened (naming the run)."""

    stopped: bool
    message: str


class RunStopper(Protocol):
    """Stops a running request's run, or says why it cannot."""

    def stop(self, state: RequestState) -> StopResult:
        """Ask for the run of the `running` request `state` to stop."""
        ...


class ZenMLRunStopper:
    """Stops runs through the ZenML client of this process (its `ZENML_*` configuration: the worker's store)."""

    def stop(self, state: RequestState) -> StopResult:
        """Stop the run forcefully where its orchestrator implements stopping; leave it alone otherwise."""
        ref = state.run_id or state.run_name
        if ref is None:
            return StopResult(False, "its run has not been created in ZenML yet; try again in a moment")
        if importlib.util.find_spec("zenml") is None:
            return StopResult(False, f"ZenML is not installed here, so run {ref} cannot be stopped from this process")
        return _stop(ref)


def _stop(ref: str) -> StopResult:
    from zenml.client import Client
    from zenml.utils import run_utils

    try:
        run = Client().get_pipeline_run(ref)
    except Exception as exc:  # noqa: BLE001 - any store error means the same here: not found from here
        return StopResult(False, f"ZenML run {ref} was not found from here ({type(exc).__name__}: {exc})")
    why_not = _unstoppable(run)
    if why_not is not None:
        return StopResult(False, f"ZenML run {run.name} was left alone: {why_not}")
    try:
        run_utils.stop_run(run, graceful=False)
    except Exception as exc:  # noqa: BLE001 - ZenML's own refusals (already stopped, stack gone) are plain errors
        return StopResult(False, f"ZenML did not stop run {run.name}: {type(exc).__name__}: {exc}")
    return StopResult(True, f"ZenML was asked to stop run {run.name} (orchestrator {_orchestrator_name(run)})")


def _unstoppable(run: Any) -> str | None:
    """Why `run`'s orchestrator cannot stop it, or None when it implements a stop."""
    from zenml.enums import StackComponentType
    from zenml.orchestrators.base_orchestrator import BaseOrchestrator
    from zenml.stack.stack_component import StackComponent

    models = run.stack.components.get(StackComponentType.ORCHESTRATOR, []) if run.stack is not None else []
    if not models:
        return "the stack or orchestrator it ran on is no longer accessible"
    model = models[0]
    kind = type(StackComponent.from_model(component_model=model))
    if kind._stop_run is not BaseOrchestrator._stop_run or kind._stop_run_forcefully is not (
        BaseOrchestrator._stop_run_forcefully
    ):
        return None
    if model.flavor_name == "local":
        return (
            f"orchestrator {model.name!r} is ZenML's local orchestrator, which runs the pipeline inside the "
            "worker's own process and cannot stop it; the request stays running"
        )
    return f"orchestrator {model.name!r} (flavor {model.flavor_name}) cannot stop runs; the request stays running"


def _orchestrator_name(run: Any) -> str:
    from zenml.enums import StackComponentType

    models = run.stack.components.get(StackComponentType.ORCHESTRATOR, []) if run.stack is not None else []
    return f"{models[0].name!r}, flavor {models[0].flavor_name}" if models else "unknown"
