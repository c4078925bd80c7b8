"""A pipeline's real signature: its parameters, its steps, and how they connect.

ZenML ignores configuration for unknown steps and checks types only when a step
runs, so the worker reads the signature itself and validates before a run exists.
"""

from __future__ import annotations

import inspect
import typing
from dataclasses import dataclass, field
from typing import Any
from unittest import mock

from pydantic.fields import FieldInfo

MARKER_PREFIX = "\x00zenml-trigger-parameter:"


@dataclass(frozen=True)
class ParameterSpec:
    """One parameter: its name, annotation and default (`required` when it has none)."""

    name: str
    annotation: Any
    default: Any = None
    required: bool = False

    @property
    def type_name(self) -> str:
        """The annotation as people write it (`Literal['a', 'b']`, `int`)."""
        return annotation_name(self.annotation)

    def describe(self) -> dict[str, Any]:
        """JSON form for `trigger pipelines --json`."""
        default = None if self.required else self.default
        return {"name": self.name, "type": self.type_name, "default": default, "required": self.required}


@dataclass(frozen=True)
class StepSpec:
    """One step invocation as the pipeline code wires it."""

    name: str
    parameters: dict[str, ParameterSpec]
    artifact_inputs: dict[str, str] = field(default_factory=dict)
    fed_by: dict[str, str] = field(default_factory=dict)
    derived: frozenset[str] = frozenset()
    fixed: frozenset[str] = frozenset()

    @property
    def configurable(self) -> dict[str, ParameterSpec]:
        """Parameters a request may set on this step (directly, or through the pipeline argument feeding it)."""
        return {
            name: spec for name, spec in self.parameters.items() if name not in self.derived and name not in self.fixed
        }

    def describe(self) -> dict[str, Any]:
        """JSON form for `trigger pipelines --json`."""
        return {
            "name": self.name,
            "parameters": [
                {**spec.describe(), **({"from_pipeline_parameter": self.fed_by[n]} if n in self.fed_by else {})}
                for n, spec in self.configurable.items()
            ],
            "artifact_inputs": dict(self.artifact_inputs),
        }


@dataclass(frozen=True)
class PipelineSignature:
    """Everything validation needs to know about one pipeline."""

    name: str
    parameters: dict[str, ParameterSpec]
    steps: dict[str, StepSpec]

    def feeder(self, step: str, parameter: str) -> str | None:
        """The pipeline parameter the code passes into `step.parameter`, if any."""
        spec = self.steps.get(step)
        return spec.fed_by.get(parameter) if spec else None

    def feeders(self, pipeline_parameter: str) -> list[str]:
        """`step.param` paths fed directly by one pipeline parameter."""
        return [
            f"{step.name}.{param}"
            for step in self.steps.values()
            for param, source in step.fed_by.items()
            if source == pipeline_parameter
        ]

    def describe(self) -> dict[str, Any]:
        """JSON form for `trigger pipelines --json`; a fed step parameter shows its argument's default."""
        steps = [step.describe() for step in self.steps.values()]
        for step in steps:
            for param in step["parameters"]:
                source = self.parameters.get(param.get("from_pipeline_parameter", ""))
                if source is not None:
                    param.update(default=source.describe()["default"], required=source.required)
        return {
            "name": self.name,
            "parameters": [spec.describe() for spec in self.parameters.values()],
            "steps": steps,
        }


def annotation_name(annotation: Any) -> str:
    """A readable name for a type annotation; `Annotated` shows its bounds (`int in [1, 1000]`)."""
    if annotation is inspect.Parameter.empty or annotation is Any:
        return "any"
    if typing.get_origin(annotation) is typing.Annotated:
        base, *metadata = typing.get_args(annotation)
        return " ".join([annotation_name(base), *constraint_names(metadata)])
    if isinstance(annotation, type) and typing.get_origin(annotation) is None:
        return annotation.__name__
    return str(annotation).replace("typing.", "")


def constraint_names(metadata: list[Any]) -> list[str]:
    """`Annotated` metadata as people read it: bounds as an interval, validators by name."""
    flat = [item for entry in metadata for item in (entry.metadata if isinstance(entry, FieldInfo) else [entry])]
    bounds = {key: getattr(item, key) for item in flat for key in _SIGNS if getattr(item, key, None) is not None}
    names = [_bounds_name(bounds)] if bounds else []
    validators = [item.func for item in flat if callable(getattr(item, "func", None))]
    return names + [f"checked by {getattr(func, '__name__', repr(func))}" for func in validators]


_SIGNS = {"ge": ">=", "gt": ">", "le": "<=", "lt": "<"}
_BRACKETS = {"ge": "[", "gt": "(", "le": "]", "lt": ")"}


def _bounds_name(bounds: dict[str, Any]) -> str:
    """`in [1, 1000]` when bounded on both sides, else `>= 0` or `< 5`."""
    low = next((key for key in ("ge", "gt") if key in bounds), None)
    high = next((key for key in ("le", "lt") if key in bounds), None)
    if low and high:
        return f"in {_BRACKETS[low]}{bounds[low]}, {bounds[high]}{_BRACKETS[high]}"
    key = low or high or ""
    return f"{_SIGNS[key]} {bounds[key]}"


def function_parameters(function: Any) -> dict[str, ParameterSpec]:
    """Parameters of a function with resolved annotations."""
    try:
        hints = typing.get_type_hints(function, include_extras=True)  # keep `Annotated` bounds and validators
    except Exception:  # noqa: BLE001 - unresolvable forward refs fall back to raw annotations
        hints = {}
    specs = {}
    for name, param in inspect.signature(function, follow_wrapped=True).parameters.items():
        required = param.default is inspect.Parameter.empty
        specs[name] = ParameterSpec(
            name=name,
            annotation=hints.get(name, param.annotation),
            default=None if required else param.default,
            required=required,
        )
    return specs


def inspect_pipeline(pipeline: Any) -> PipelineSignature:
    """Compile `pipeline` with marker values to learn which argument feeds which step parameter."""
    parameters = function_parameters(pipeline.entrypoint)
    invocations = _compile_with_markers(pipeline, parameters)
    steps = {inv_id: _step_spec(inv_id, invocation) for inv_id, invocation in invocations.items()}
    return PipelineSignature(name=pipeline.name, parameters=parameters, steps=steps)


def _compile_with_markers(pipeline: Any, parameters: dict[str, ParameterSpec]) -> dict[str, Any]:
    """Run the pipeline function in a compilation context with a marker string per argument.

    Steps type-check their inputs while the graph is built, so the check is switched
    off for this dry compilation only; if the pipeline code cannot run on markers
    (it computes with an argument), compile with the defaults instead.
    """
    from zenml.pipelines.compilation_context import PipelineCompilationContext
    from zenml.steps.entrypoint_function_utils import EntrypointFunctionDefinition

    compiled = pipeline.copy()
    compiled._clear_state()
    markers = {name: MARKER_PREFIX + name for name in parameters}
    try:
        with mock.patch.object(EntrypointFunctionDefinition, "_validate_input_value", _accept_any):
            with PipelineCompilationContext(pipeline=compiled):
                compiled.entrypoint(**markers)
    except Exception:  # noqa: BLE001 - any failure of the dry run falls back to a plain compile
        return _compile_with_defaults(pipeline, parameters)
    return dict(compiled.invocations)


def _accept_any(*_args: Any, **_kwargs: Any) -> None:
    return None


def _compile_with_defaults(pipeline: Any, parameters: dict[str, ParameterSpec]) -> dict[str, Any]:
    """Fallback: compile with default values and mark step values equal to exactly one default."""
    compiled = pipeline.copy()
    compiled.prepare()
    defaults = {name: spec.default for name, spec in parameters.items() if not spec.required}
    for invocation in compiled.invocations.values():
        for key, value in invocation.parameters.items():
            matches = [name for name, default in defaults.items() if default == value]
            if len(matches) == 1:
                invocation.parameters[key] = MARKER_PREFIX + matches[0]
    return dict(compiled.invocations)


def _step_spec(invocation_id: str, invocation: Any) -> StepSpec:
    parameters = function_parameters(invocation.step.entrypoint)
    artifacts = {name: _producer(value) for name, value in invocation.input_artifacts.items()}
    for name in (
        *invocation.external_artifacts,
        *invocation.model_artifacts_or_metadata,
        *invocation.client_lazy_loaders,
    ):
        artifacts[name] = "external"
    fed_by, derived, fixed = {}, set(), set()
    for name, value in invocation.parameters.items():
        source = _marker_name(value)
        if source is not None:
            fed_by[name] = source
        elif _contains_marker(value):
            derived.add(name)
        else:
            fixed.add(name)
    return StepSpec(
        name=invocation_id,
        parameters={n: s for n, s in parameters.items() if n not in artifacts},
        artifact_inputs=artifacts,
        fed_by=fed_by,
        derived=frozenset(derived),
        fixed=frozenset(fixed),
    )


def _producer(value: Any) -> str:
    items = value if isinstance(value, list) else [value]
    return ", ".join(sorted({item.invocation_id for item in items}))


def _marker_name(value: Any) -> str | None:
    if isinstance(value, str) and value.startswith(MARKER_PREFIX):
        return value[len(MARKER_PREFIX) :]
    return None


def _contains_marker(value: Any) -> bool:
    if isinstance(value, str):
        return MARKER_PREFIX in value
    if isinstance(value, dict):
        return any(_contains_marker(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return any(_contains_marker(v) for v in value)
    return False
