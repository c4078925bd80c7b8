"""Resolving a request to what it runs: a registered pipeline, or a template's snapshot of one, with a
validated plan. Nothing is ever imported by the name in a request: only registered pipelines resolve."""

from __future__ import annotations

from dataclasses import dataclass

from pipelines.registry import RegisteredPipeline
from producers.contract import TriggerRequest
from producers.errors import InvalidRequest, Problem, TriggerError
from worker.errors import InvalidParameters, LockedOverride, StoreUnavailable, UnknownPipeline, UnknownTemplate
from worker.runner import transient_types
from worker.services import Services
from worker.signature import PipelineSignature, inspect_pipeline
from worker.templates import Template, locked_problems, merged
from worker.validation import RunPlan, plan_run, worker_context


@dataclass(frozen=True)
class Target:
    """What a request resolved to: a registered pipeline, a validated plan, maybe a template."""

    entry: RegisteredPipeline
    plan: RunPlan
    template: Template | None = None


class Resolver:
    """Finds what a request runs and validates it against the pipeline's real signature."""

    def __init__(self, services: Services) -> None:
        self.s = services
        self._signatures: dict[str, PipelineSignature] = {}

    def signature(self, entry: RegisteredPipeline) -> PipelineSignature:
        """The pipeline's signature, compiled once per process."""
        if entry.name not in self._signatures:
            self._signatures[entry.name] = inspect_pipeline(entry.pipeline)
        return self._signatures[entry.name]

    def resolve(self, request: TriggerRequest) -> Target:
        if request.template is not None:
            return self._template_target(request)
        entry = self.s.registry.get(request.pipeline_name or "")
        if entry is None:
            known = ", ".join(self.s.registry.names()) or "none"
            problem = f"pipeline {request.pipeline_name!r} is not registered; registered: {known}"
            raise UnknownPipeline(details=[Problem("pipeline_name", problem)])
        parameters, steps = dict(request.parameters), request.step_parameters()
        return Target(entry, plan_run(self.signature(entry), parameters, steps, worker_context(self.s.settings)))

    def _template_target(self, request: TriggerRequest) -> Target:
        """Find the snapshot, check its pipeline is registered, lock, merge and validate."""
        template = self._template(request.template or "")
        entry = self.s.registry.by_source(template.source)
        if entry is None:
            problem = f"template {template.ref} runs {template.source!r}, which this worker does not register"
            raise UnknownTemplate(details=[Problem("template", problem)])
        signature = self.signature(entry)
        parameters, steps = dict(request.parameters), request.step_parameters()
        locked = locked_problems(template, signature, parameters, steps)
        try:
            plan = plan_run(signature, *merged(template, signature, parameters, steps), worker_context(self.s.settings))
        except InvalidRequest as exc:
            raise (LockedOverride if locked else InvalidParameters)(details=locked + exc.details) from None
        if locked:
            raise LockedOverride(details=locked)
        return Target(entry, plan, template)

    def _template(self, ref: str) -> Template:
        try:
            return self.s.templates.get(ref)
        except TriggerError:
            raise
        except transient_types() as exc:
            raise StoreUnavailable(f"ZenML store unavailable while resolving template {ref}: {exc}") from exc
