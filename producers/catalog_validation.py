"""The early check: a request against the catalog, with the worker's paths and no worker code.

It walks a request the way `worker.validation.Validator` and the worker's template
resolution do, so each mistake is reported at the same path; values are checked against
the JSON Schemas the worker derived from its own pydantic adapters. Where the catalog
cannot know (a validator that needs the worker's data root, a type with no schema) it
stays silent: the worker validates every request again and decides.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator
from typing import Any

from producers.catalog import Catalog, CatalogCheck, CatalogRead, ParameterInfo, PipelineInfo, StepInfo, TemplateInfo
from producers.contract import TriggerRequest
from producers.errors import Problem
from producers.overrides import merged_overrides

TEMPLATE_REF = re.compile(r"^(?P<name>[A-Za-z0-9_.:/-]+?)(?:@(?P<version>\d+))?$")
"""`NAME` or `NAME@VERSION`, as `worker.templates.REF_PATTERN` reads it (a unit test keeps them equal)."""
SNAPSHOT_ID = re.compile(r"^[0-9a-fA-F-]{32,36}$")
"""A ZenML snapshot id, as `worker.templates.UUID_PATTERN` reads it."""


def check_request(read: CatalogRead, request: TriggerRequest) -> CatalogCheck:
    """Every problem the catalog can see in `request`, or why the check is skipped."""
    catalog = read.catalog
    if catalog is None or read.unusable:
        return CatalogCheck(skipped=read.unusable or "no catalog")
    if request.template is not None:
        return _check_template(catalog, request)
    pipeline = catalog.pipeline(request.pipeline_name or "")
    if pipeline is None:
        known = ", ".join(catalog.names()) or "none"
        problem = f"pipeline {request.pipeline_name!r} is not registered; registered: {known}"
        return CatalogCheck([Problem("pipeline_name", problem)], content_hash=catalog.content_hash)
    problems = CatalogValidator(pipeline).problems(dict(request.parameters), request.step_parameters())
    return CatalogCheck(problems, content_hash=catalog.content_hash)


def _check_template(catalog: Catalog, request: TriggerRequest) -> CatalogCheck:
    """The worker's template resolution: find it, check its pipeline is registered, then locks and values."""
    if not catalog.templates.known:
        return CatalogCheck(skipped=f"the catalog does not know the templates: {catalog.templates.reason}")
    template, problem = find_template(catalog, request.template or "")
    if template is None:
        return CatalogCheck([Problem("template", problem or "")], content_hash=catalog.content_hash)
    if not template.registered:
        problem = f"template {template.ref} runs {template.source!r}, which this worker does not register"
        return CatalogCheck([Problem("template", problem)], content_hash=catalog.content_hash)
    pipeline = catalog.pipeline(template.pipeline_name)
    if pipeline is None:
        return CatalogCheck(skipped=f"the catalog lists template {template.ref} but not its pipeline")
    return CatalogCheck(template_problems(template, pipeline, request), content_hash=catalog.content_hash)


def find_template(catalog: Catalog, ref: str) -> tuple[TemplateInfo | None, str | None]:
    """The template `ref` names (latest `NAME`, `NAME@VERSION` or a snapshot id), or the worker's problem text."""
    items = catalog.templates.items
    if SNAPSHOT_ID.match(ref):
        found = next((t for t in items if _uuid_hex(t.snapshot_id) == _uuid_hex(ref)), None)
        return found, None if found else f"no snapshot with id {ref}"
    match = TEMPLATE_REF.match(ref)
    if match is None:
        return None, f"{ref!r} is not a template name (NAME or NAME@VERSION)"
    versions = sorted((t for t in items if t.name == match.group("name")), key=lambda t: t.version)
    wanted = match.group("version")
    chosen = versions[-1:] if wanted is None else [t for t in versions if t.version == int(wanted)]
    if chosen:
        return chosen[0], None
    known = ", ".join(t.ref for t in versions) or "none"
    return None, f"template {ref!r} does not exist (versions: {known})"


def _uuid_hex(text: str) -> str:
    return text.replace("-", "").lower()


def template_problems(template: TemplateInfo, pipeline: PipelineInfo, request: TriggerRequest) -> list[Problem]:
    """Locked paths the request changes, then the merged configuration's problems (the worker's order)."""
    parameters, steps = dict(request.parameters), request.step_parameters()
    locked = TemplateLocks(template, pipeline).problems(parameters, steps)
    merged_parameters, merged_steps = merged(template, pipeline, parameters, steps)
    return locked + CatalogValidator(pipeline).problems(merged_parameters, merged_steps)


_UNSET = object()
"""No value at all (a required parameter the template does not set): any request value changes it."""
_UNKNOWN = object()
"""A default the catalog holds only as text: the check cannot tell a change, so it lets the worker judge."""


class TemplateLocks:
    """`worker.templates.locked_problems` over the catalog: which overrides change a locked value."""

    def __init__(self, template: TemplateInfo, pipeline: PipelineInfo) -> None:
        self.template, self.pipeline = template, pipeline
        self.allow = set(template.allow)

    def problems(self, parameters: dict[str, Any], steps: dict[str, dict[str, Any]]) -> list[Problem]:
        """Every locked path whose value the request changes."""
        problems = []
        for name, value in parameters.items():
            path = f"parameters.{name}"
            if path not in self.allow and _changes(self._pipeline_value(name), value):
                problems.append(Problem(path, self._message()))
        for step, params in steps.items():
            for name, value in params.items():
                path = f"steps.{step}.parameters.{name}"
                if not self._allowed(step, name, path) and _changes(self._step_value(step, name), value):
                    problems.append(Problem(path, self._message()))
        return problems

    def _allowed(self, step: str, name: str, path: str) -> bool:
        feeder = self.pipeline.feeder(step, name)
        return path in self.allow or (feeder is not None and f"parameters.{feeder}" in self.allow)

    def _pipeline_value(self, name: str) -> Any:
        if name in self.template.parameters:
            return self.template.parameters[name]
        return _default(self.pipeline.parameter(name))

    def _step_value(self, step: str, name: str) -> Any:
        if name in self.template.steps.get(step, {}):
            return self.template.steps[step][name]
        feeder = self.pipeline.feeder(step, name)
        if feeder:
            return self._pipeline_value(feeder)
        spec = self.pipeline.step(step)
        return _default(spec.parameter(name) if spec else None)

    def _message(self) -> str:
        allowed = ", ".join(sorted(self.allow)) or "nothing"
        return f"is locked by template {self.template.ref}; a request may override only: {allowed}"


def _default(info: ParameterInfo | None) -> Any:
    if info is None or info.required:
        return _UNSET
    return info.default if info.default_exact else _UNKNOWN


def _changes(current: Any, value: Any) -> bool:
    return current is not _UNKNOWN and (current is _UNSET or current != value)


def merged(
    template: TemplateInfo, pipeline: PipelineInfo, parameters: dict[str, Any], steps: dict[str, dict[str, Any]]
) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """`worker.templates.merged`: the template's configuration with the request's overrides on top."""
    return merged_overrides(template.parameters, template.steps, pipeline.feeder, parameters, steps)


def _unknown(kind: str, name: str, known: list[str]) -> str:
    choices = ", ".join(sorted(known)) or "none"
    return f"unknown {kind} {name!r}; expected one of: {choices}"


class CatalogValidator:
    """`worker.validation.Validator` over one pipeline's catalog entry: every problem, each at its path."""

    def __init__(self, pipeline: PipelineInfo) -> None:
        self.pipeline = pipeline
        self.found: list[Problem] = []
        self.valid: dict[str, Any] = {}
        self.mapped: dict[str, tuple[str, Any]] = {}

    def problems(self, parameters: dict[str, Any], steps: dict[str, dict[str, Any]]) -> list[Problem]:
        """What the worker's validator would reject, as far as the catalog can tell."""
        for name, value in parameters.items():
            self._pipeline_parameter(name, value)
        for step, params in steps.items():
            self._step(step, params)
        self._apply_mapped()
        self._check_required()
        return self.found

    def _pipeline_parameter(self, name: str, value: Any) -> None:
        path = f"parameters.{name}"
        info = self.pipeline.parameter(name)
        if info is None:
            known = [p.name for p in self.pipeline.parameters]
            self.found.append(Problem(path, _unknown("pipeline parameter", name, known)))
            return
        problems = value_problems(info, value, path)
        self.found.extend(problems)
        if not problems:
            self.valid[name] = value

    def _step(self, step_name: str, params: dict[str, Any]) -> None:
        step = self.pipeline.step(step_name)
        if step is None:
            known = [s.name for s in self.pipeline.steps]
            self.found.append(Problem(f"steps.{step_name}", _unknown("step", step_name, known)))
            return
        for name, value in params.items():
            self._step_parameter(step, name, value)

    def _step_parameter(self, step: StepInfo, name: str, value: Any) -> None:
        path = f"steps.{step.name}.parameters.{name}"
        info = step.parameter(name)
        problem = _step_parameter_problem(step, name, info)
        if problem or info is None:
            self.found.append(Problem(path, problem or ""))
            return
        problems = value_problems(info, value, path)
        self.found.extend(problems)
        if not problems and info.from_pipeline_parameter:
            self._map(f"{step.name}.{name}", info.from_pipeline_parameter, value, path)

    def _map(self, fed: str, source: str, value: Any, path: str) -> None:
        """A step override of a parameter the code feeds from `source` moves onto `source`, if unambiguous."""
        others = [p for p in self.pipeline.feeders(source) if p != fed]
        previous = self.mapped.get(source)
        if others:
            also = ", ".join(others)
            problem = f"is passed from pipeline parameter {source!r}, which also feeds {also}; set parameters.{source}"
            self.found.append(Problem(path, problem + " instead"))
        elif previous is not None and previous[1] != value:
            self.found.append(Problem(path, f"conflicts with {previous[0]} (both set pipeline parameter {source!r})"))
        else:
            self.mapped[source] = (path, value)

    def _apply_mapped(self) -> None:
        for source, (path, value) in self.mapped.items():
            if source in self.valid and self.valid[source] != value:
                self.found.append(Problem(path, f"conflicts with parameters.{source}={self.valid[source]!r}"))
            else:
                self.valid[source] = value

    def _check_required(self) -> None:
        for info in self.pipeline.parameters:
            if info.required and info.name not in self.valid:
                self.found.append(Problem(f"parameters.{info.name}", f"is required ({info.type}) and has no default"))


def _step_parameter_problem(step: StepInfo, name: str, info: ParameterInfo | None) -> str | None:
    if name in step.artifact_inputs:
        producer = step.artifact_inputs[name]
        return f"is an artifact input (produced by {producer}), not a parameter; it cannot be set by a request"
    if name in step.fixed:
        return "is set to a fixed value in the pipeline code and cannot be overridden"
    if name in step.derived:
        return "is computed from pipeline parameters in the pipeline code; set those pipeline parameters instead"
    if info is None:
        return _unknown(f"parameter of step {step.name!r}", name, [p.name for p in step.parameters])
    return None


def value_problems(info: ParameterInfo, value: Any, path: str) -> list[Problem]:
    """Where `value` breaks the parameter's JSON Schema, one problem per path, as pydantic would locate it."""
    if info.json_schema is None:
        return []
    found: dict[str, Problem] = {}
    for error in _validator(info.json_schema).iter_errors(value):
        for leaf in _leaves(error):
            for where in _paths(leaf, path):
                found.setdefault(where, Problem(where, f"{leaf.message} (expected {info.type})"))
    return list(found.values())


def _validator(schema: dict[str, Any]) -> Any:
    return _validator_class()(schema)


@functools.cache
def _validator_class() -> Any:
    """Draft 2020-12 (pydantic's dialect) with a strict `integer`: the worker's strict JSON refuses `1.0`.

    jsonschema is imported here, on first use, so `import producers` stays quick.
    """
    from jsonschema import Draft202012Validator, validators

    def strict_integer(_checker: Any, instance: Any) -> bool:
        return isinstance(instance, int) and not isinstance(instance, bool)

    checker = Draft202012Validator.TYPE_CHECKER.redefine("integer", strict_integer)
    return validators.extend(Draft202012Validator, type_checker=checker)


def _leaves(error: Any) -> Iterator[Any]:
    """An `anyOf` that is really `Optional[X]` reports X's own errors, where pydantic reports them."""
    if error.validator in ("anyOf", "oneOf") and error.context:
        branches: dict[int, list[Any]] = {}
        for sub in error.context:
            branches.setdefault(sub.relative_schema_path[0], []).append(sub)
        real = [subs for index, subs in branches.items() if error.validator_value[index] != {"type": "null"}]
        if len(real) == 1:
            for sub in real[0]:
                yield from _leaves(sub)
            return
    yield error


def _paths(error: Any, base: str) -> list[str]:
    """Dotted paths of one error; a missing or extra object key is located at that key, as pydantic does."""
    where = ".".join([base, *(str(part) for part in error.absolute_path)])
    instance = error.instance if isinstance(error.instance, dict) else {}
    if error.validator == "required":
        return [f"{where}.{name}" for name in error.validator_value if name not in instance]
    if error.validator == "additionalProperties" and error.validator_value is False:
        return [f"{where}.{key}" for key in _extra_keys(error.schema, instance)]
    return [where]


def _extra_keys(schema: dict[str, Any], instance: dict[str, Any]) -> list[str]:
    declared = schema.get("properties", {})
    patterns = list(schema.get("patternProperties", {}))
    return [key for key in instance if key not in declared and not any(re.search(p, key) for p in patterns)]
