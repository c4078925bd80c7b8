"""Running a resolved request: in this process or on a ZenML server, within its time limit, and handing it on
as a retry when the worker's shutdown cuts the run off."""

from __future__ import annotations

import time
from collections.abc import Callable

from producers.contract import TriggerRequest
from producers.state import RequestState, Status
from worker.deadline import deadline
from worker.errors import WorkerShutdown
from worker.job import Job, now
from worker.logs import get_logger
from worker.outcomes import Refused, Step
from worker.recording import Recorder
from worker.resolution import Target
from worker.runner import Provenance, RunOutcome
from worker.services import Services


class HandedOn(Exception):
    """A run the worker's shutdown cut off was handed on (`Execution._hand_on`); `state` is what was recorded."""

    def __init__(self, state: RequestState) -> None:
        super().__init__(state.request_id)
        self.state = state


class Execution:
    """Runs a target through the backend its ZenML connection calls for, and finds an earlier attempt's run."""

    def __init__(self, services: Services, recorder: Recorder) -> None:
        self.s, self.recorder = services, recorder
        self.log = get_logger()

    def execute(self, job: Job, target: Target, started: RequestState) -> RunOutcome:
        """Run within the target's time limit; a run cut off by a shutdown hands its request on first.

        The exception goes on if it is the process's own exit (a pool child's `SystemExit`); one raised
        in the run (ZenML's `RunInterruptedException` with `--pool solo`) becomes `HandedOn`. A run past
        its time limit is not handed on: the terminate signal is the pool's hard limit, and the main
        process records the request `failed` (`Processor.record_killed`).
        """
        limit, began = self._time_limit(target), time.monotonic()
        try:
            with deadline(limit, f"run {started.run_name}"):
                return self._run(job, target, started)
        except BaseException as exc:
            if not self.s.stopping() or time.monotonic() - began >= limit:
                raise
            handed = self._hand_on(job, started)
            if not isinstance(exc, Exception):
                raise
            raise HandedOn(handed) from exc

    def _hand_on(self, job: Job, started: RequestState) -> RequestState:
        """The worker stops mid-run: mark the run failed in ZenML and schedule the next attempt, as a retry.

        Recorded under the lease, before it is released, so the copy kombu puts back on the queue finds
        the request `retrying` and is skipped, and the next attempt does not wait for the lease timeout.
        Best effort: if Redis is away too, that copy finds the attempt `running` and counts it lost.
        """
        reason = f"the worker shut down during run {started.run_name}"
        try:
            run_id = self.s.runner.abandon(started.run_name, reason) if started.run_name else None
            state = started.model_copy(update={"run_id": run_id or started.run_id})
            self.log.warning("trigger.interrupted", attempt=state.attempts, run_id=state.run_id, reason=reason)
            return self.recorder.retry_or_give_up(job, state, WorkerShutdown(reason))
        except Exception as exc:  # noqa: BLE001 - the process is on its way out; the restored copy recovers it
            self.log.error("trigger.interrupt_unrecorded", error=f"{type(exc).__name__}: {exc}")
            return started

    def _time_limit(self, target: Target) -> float:
        """Seconds the run may take: `template:NAME`, then the pipeline, then the default."""
        limits, settings = self.s.settings.run_timeouts, self.s.settings
        if target.template is not None and f"template:{target.template.name}" in limits:
            return limits[f"template:{target.template.name}"]
        return limits.get(target.entry.name, settings.run_timeout)

    def _run(self, job: Job, target: Target, started: RequestState) -> RunOutcome:
        """Run through the backend the ZenML connection calls for."""
        template, run_name, why = target.template, started.run_name or "", provenance(job.request)
        if template is None:
            return self.s.runner.run(target.entry, target.plan, run_name, provenance=why)
        if self.s.server.available(template):
            return self.s.server.run(
                template,
                target.plan.parameters,
                target.plan.steps,
                run_name,
                on_submitted=self._submitted_hook(started, job.fence),
            )
        outcome = self.s.runner.run(target.entry, target.plan, run_name, template.run_config, provenance=why)
        self.s.runner.link(outcome, template.ref, template.snapshot_id)
        return outcome

    def earlier_outcome(self, target: Target, state: RequestState) -> RunOutcome | None:
        """The outcome of an earlier attempt's run: finished after all, or still going on a server.

        A server run is found by its run name too, for when the server took it but recording its id
        did not happen (a Redis stall, a client timeout): it is followed, never submitted again.
        """
        server_run = target.template is not None and self.s.server.available(target.template)
        if server_run and state.status in (Status.RUNNING, Status.RETRYING) and target.template is not None:
            run_id = state.run_id or (self.s.runner.run_id(state.run_name) if state.run_name else None)
            if run_id:
                self.log.info("trigger.following", run_id=run_id)
                return self.s.server.follow(run_id, state.run_name or "", target.template.ref)
        if state.status is not Status.RUNNING or not state.run_name:
            return None
        outcome = self.s.runner.find(state.run_name, target.entry)
        if outcome is not None and outcome.status in ("completed", "failed"):
            self.log.info("trigger.recovered", run_id=outcome.run_id, run_status=outcome.status)
            return outcome
        return None

    def _submitted_hook(self, started: RequestState, fence: str | None) -> Callable[[str], None]:
        """Record the server's run id at once, so no later attempt submits the run again."""

        def record(run_id: str) -> None:
            try:
                noted = started.model_copy(update={"run_id": run_id, "updated_at": now()})
                self.recorder.outcomes.record(Step(noted), fence)
            except Refused as refused:  # the lease went elsewhere; that worker finds the run by its name
                self.log.warning("trigger.fenced", reason=f"refused to record the run id: {refused.reason}")

        return record


def provenance(request: TriggerRequest) -> Provenance:
    """Why the run starts, for the dashboard: the request's id, source, keys and metadata; tagged by source."""
    keys_ = {"trigger_idempotency_key": request.idempotency_key, "trigger_coalesce_key": request.coalesce_key}
    metadata = {"trigger_request_id": request.request_id, "trigger_source": request.source}
    metadata |= {k: v for k, v in keys_.items() if v is not None}
    if request.metadata:
        metadata["trigger_metadata"] = dict(request.metadata)
    return Provenance(metadata=metadata, tags=(f"trigger-source:{request.source}",))
