"""Validate a request against a pipeline's signature, reporting every problem at once.

The result is a `RunPlan`: pipeline arguments and step parameters ZenML will accept,
with step-level overrides of parameters that the pipeline code passes from its own
arguments moved onto those arguments (ZenML refuses them as step configuration).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from pydantic import TypeAdapter, ValidationError

from pipelines.data import DATA_ROOT
from producers.errors import Problem
from worker.errors import InvalidParameters
from worker.settings import WorkerSettings
from worker.signature import ParameterSpec, PipelineSignature, StepSpec


@dataclass(frozen=True)
class RunPlan:
    """What to run: validated pipeline arguments and per-step parameters."""

    pipeline_name: str
    parameters: dict[str, Any] = field(default_factory=dict)
    steps: dict[str, dict[str, Any]] = field(default_factory=dict)

    def step_configuration(self, base: dict[str, Any] | None = None) -> dict[str, dict[str, Any]]:
        """ZenML's `steps=` form, `{step: {..., "parameters": {...}}}`, over a run config's own step options."""
        return step_options(self.steps, base)


def step_options(steps: dict[str, dict[str, Any]], base: dict[str, Any] | None = None) -> dict[str, dict[str, Any]]:
    """Per-step ZenML options: `base` (a run config's `steps` section) with validated parameters set."""
    options = {name: dict(values) for name, values in (base or {}).items()}
    for name, params in steps.items():
        if params:
            options.setdefault(name, {})["parameters"] = params
    return options


@lru_cache(maxsize=512)
def _cached_adapter(annotation: Any) -> TypeAdapter[Any]:
    return TypeAdapter(annotation)


def adapter_for(annotation: Any) -> TypeAdapter[Any]:
    """The adapter for `annotation` (the catalog's JSON Schemas come from it too); one whose `Annotated`
    metadata is unhashable is built uncached."""
    try:
        hash(annotation)
    except TypeError:
        return TypeAdapter(annotation)
    return _cached_adapter(annotation)


def check_value(spec: ParameterSpec, value: Any, path: str, context: Mapping[str, Any] | None = None) -> list[Problem]:
    """Problems with `value` for `spec`, validated as strict JSON (no `"10"` for an int).

    `context` reaches validators in the annotation (`ValidationInfo.context`); the worker
    passes `{"data_root": ...}` so `pipelines.data.DataUrl` can check local paths.
    """
    try:
        adapter = adapter_for(spec.annotation)
    except Exception:  # noqa: BLE001 - an annotation pydantic cannot express accepts any JSON value
        return []
    try:
        adapter.validate_json(json.dumps(value), strict=True, context=context)
    except ValidationError as exc:
        return [_value_problem(path, item, spec) for item in exc.errors(include_url=False)]
    return []


def _value_problem(path: str, item: dict[str, Any], spec: ParameterSpec) -> Problem:
    inner = ".".join(str(part) for part in item["loc"])
    where = f"{path}.{inner}" if inner else path
    if item["type"] == "value_error":  # a validator's own message already says what is wrong
        return Problem(where, item["msg"].removeprefix("Value error, "))
    return Problem(where, f"{item['msg']} (expected {spec.type_name})")


def _unknown(kind: str, name: str, known: list[str]) -> str:
    choices = ", ".join(sorted(known)) or "none"
    return f"unknown {kind} {name!r}; expected one of: {choices}"


class Validator:
    """Checks one request's parameters against one signature; collects every problem."""

    def __init__(self, signature: PipelineSignature, context: Mapping[str, Any] | None = None) -> None:
        self.signature = signature
        self.context = context
        self.problems: list[Problem] = []
        self.parameters: dict[str, Any] = {}
        self.mapped: dict[str, tuple[str, Any]] = {}
        self.steps: dict[str, dict[str, Any]] = {}

    def plan(self, parameters: dict[str, Any], steps: dict[str, dict[str, Any]]) -> RunPlan:
        """The run plan, or `InvalidParameters` listing every problem with its path."""
        for name, value in parameters.items():
            self._pipeline_parameter(name, value)
        for step_name, step_params in steps.items():
            self._step(step_name, step_params)
        self._apply_mapped()
        self._check_required()
        if self.problems:
            raise InvalidParameters(details=self.problems)
        return RunPlan(self.signature.name, self.parameters, self.steps)

    def _pipeline_parameter(self, name: str, value: Any) -> None:
        path = f"parameters.{name}"
        spec = self.signature.parameters.get(name)
        if spec is None:
            self.problems.append(Problem(path, _unknown("pipeline parameter", name, list(self.signature.parameters))))
            return
        problems = check_value(spec, value, path, self.context)
        self.problems.extend(problems)
        if not problems:
            self.parameters[name] = value

    def _step(self, step_name: str, params: dict[str, Any]) -> None:
        step = self.signature.steps.get(step_name)
        if step is None:
            self.problems.append(Problem(f"steps.{step_name}", _unknown("step", step_name, list(self.signature.steps))))
            return
        for name, value in params.items():
            self._step_parameter(step, name, value)

    def _step_parameter(self, step: StepSpec, name: str, value: Any) -> None:
        path = f"steps.{step.name}.parameters.{name}"
        problem = self._step_parameter_problem(step, name)
        if problem:
            self.problems.append(Problem(path, problem))
            return
        problems = check_value(step.parameters[name], value, path, self.context)
        self.problems.extend(problems)
        if problems:
            return
        if name in step.fed_by:
            self._map_onto_pipeline_parameter(step, name, value, path)
        else:
            self.steps.setdefault(step.name, {})[name] = value

    def _step_parameter_problem(self, step: StepSpec, name: str) -> str | None:
        if name in step.artifact_inputs:
            producer = step.artifact_inputs[name]
            return f"is an artifact input (produced by {producer}), not a parameter; it cannot be set by a request"
        if name in step.fixed:
            return "is set to a fixed value in the pipeline code and cannot be overridden"
        if name in step.derived:
            return "is computed from pipeline parameters in the pipeline code; set those pipeline parameters instead"
        if name not in step.parameters:
            return _unknown(f"parameter of step {step.name!r}", name, list(step.configurable))
        return None

    def _map_onto_pipeline_parameter(self, step: StepSpec, name: str, value: Any, path: str) -> None:
        source = step.fed_by[name]
        others = [p for p in self.signature.feeders(source) if p != f"{step.name}.{name}"]
        if others:
            also = ", ".join(others)
            self.problems.append(
                Problem(
                    path,
                    f"is passed from pipeline parameter {source!r}, which also feeds {also}; "
                    f"set parameters.{source} instead",
                )
            )
            return
        previous = self.mapped.get(source)
        if previous is not None and previous[1] != value:
            self.problems.append(
                Problem(path, f"conflicts with {previous[0]} (both set pipeline parameter {source!r})")
            )
            return
        self.mapped[source] = (path, value)

    def _apply_mapped(self) -> None:
        for source, (path, value) in self.mapped.items():
            if source in self.parameters and self.parameters[source] != value:
                self.problems.append(Problem(path, f"conflicts with parameters.{source}={self.parameters[source]!r}"))
            else:
                self.parameters[source] = value

    def _check_required(self) -> None:
        for name, spec in self.signature.parameters.items():
            if spec.required and name not in self.parameters:
                self.problems.append(
                    Problem(f"parameters.{name}", f"is required ({spec.type_name}) and has no default")
                )


def plan_run(
    signature: PipelineSignature,
    parameters: dict[str, Any],
    steps: dict[str, dict[str, Any]],
    context: Mapping[str, Any] | None = None,
) -> RunPlan:
    """Validate and map a request's parameters into a `RunPlan`.

    `context` is pydantic's validation context. The worker passes `worker_context(settings)`;
    without one, validators skip checks that need the worker's configuration.
    """
    return Validator(signature, context).plan(parameters, steps)


def worker_context(settings: WorkerSettings) -> dict[str, Any]:
    """The validation context a worker validates requests with: `{"data_root": Path | None}`."""
    return {DATA_ROOT: settings.data_root}
