"""ZenML's trigger call, queued: change one import and `trigger_pipeline(...)` enqueues instead of blocking.

    # from zenml.client import Client; Client().trigger_pipeline(template_id=..., run_configuration=config)
    from producers.zenml_compat import trigger_pipeline
    run = trigger_pipeline(template_id=..., run_configuration=config)   # same keywords, same meaning
    run.wait(600)                                                       # the request's terminal state

A run configuration is honoured where it sets what a trigger request carries: `steps.<step>.parameters`
and the pipeline's `parameters`. Anything else with a value (settings, caching, a schedule, a stack)
is refused with its path rather than silently dropped: the worker, not the caller, decides those.
ZenML itself is never imported.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from uuid import UUID

from producers.client import TriggerClient, request_from
from producers.errors import InvalidRequest, Problem
from producers.state import RequestState

HONOURED = frozenset({"parameters", "steps"})
"""Run-configuration fields the queue carries into a request; any other field with a value is refused."""
IGNORED = frozenset({"run_name"})
"""Fields every ZenML template's `config_template` carries, so the tutorial's pattern (its whole config with
the steps replaced) works: the worker names runs itself (`<pipeline>-<request id>-<attempt>`)."""
HONOURED_IN_STEP = frozenset({"parameters"})
SOURCE = "zenml-compat"


@dataclass
class QueuedRun:
    """What `trigger_pipeline` returns: the request id (also as `id`), to follow or wait on."""

    request_id: str
    client: TriggerClient = field(repr=False)

    @property
    def id(self) -> str:
        """ZenML's run response has `.id`; here it is the request's id (its ZenML run id comes later)."""
        return self.request_id

    def status(self) -> RequestState:
        """The request's current state."""
        return self.client.status(self.request_id)

    def wait(self, timeout: float) -> RequestState:
        """Block up to `timeout` seconds for a terminal state (its `run_id` is the ZenML run's)."""
        return self.client.wait(self.request_id, timeout)


def trigger_pipeline(
    snapshot_name_or_id: str | UUID | None = None,
    pipeline_name_or_id: str | UUID | None = None,
    run_configuration: Any = None,
    config_path: str | None = None,
    stack_name_or_id: str | UUID | None = None,
    synchronous: bool = False,
    project: str | UUID | None = None,
    template_id: UUID | str | None = None,
    *,
    client: TriggerClient | None = None,
    timeout: float = 3600,
) -> QueuedRun:
    """`zenml.client.Client().trigger_pipeline` with ZenML's keywords, enqueued: a snapshot or template
    (`snapshot_name_or_id`, `template_id`) runs as our template of that name, version or snapshot id; a
    pipeline alone runs the registered pipeline. `synchronous=True` waits up to `timeout` seconds.
    `stack_name_or_id` and `project` belong to the worker's ZenML connection and are refused."""
    _refuse_given(stack_name_or_id=stack_name_or_id, project=project)
    parameters, steps = run_configuration_fields(_configuration(run_configuration, config_path))
    template = snapshot_name_or_id or template_id
    if template is None and pipeline_name_or_id is None:
        raise InvalidRequest(details=[Problem("", "give snapshot_name_or_id, template_id or pipeline_name_or_id")])
    request = request_from(
        None if template is not None else str(pipeline_name_or_id),
        template=str(template) if template is not None else None,
        parameters=parameters,
        steps=steps,
        source=SOURCE,
    )
    client = client or TriggerClient.from_env()
    run = QueuedRun(client.send(request), client)
    if synchronous:
        run.wait(timeout)
    return run


def run_configuration_fields(configuration: Mapping[str, Any], where: str = "") -> tuple[dict[str, Any], Any]:
    """(pipeline parameters, step parameters) from a ZenML run configuration; every field that sets
    something else, and every section that is not an object, is an `InvalidRequest` problem at its path."""
    problems = _unhonoured(configuration, HONOURED, where)
    parameters = _section(configuration.get("parameters"), _at(where, "parameters"), problems)
    steps = _section(configuration.get("steps"), _at(where, "steps"), problems)
    step_parameters = {}
    for name, step in steps.items():
        at = _at(where, f"steps.{name}")
        step = _section(step, at, problems)
        problems += _unhonoured(step, HONOURED_IN_STEP, at)
        step_parameters[name] = _section(step.get("parameters"), f"{at}.parameters", problems)
    if problems:
        raise InvalidRequest(details=problems)
    return parameters, step_parameters


def _section(value: Any, where: str, problems: list[Problem]) -> dict[str, Any]:
    """`value` as an object (None: empty); anything else is a problem at `where`, never silently converted."""
    if value is None:
        return {}
    if isinstance(value, Mapping):
        return dict(value)
    problems.append(Problem(where, f"must be an object, not {type(value).__name__}"))
    return {}


def _unhonoured(section: Mapping[str, Any], honoured: frozenset[str], where: str) -> list[Problem]:
    """A problem for each field outside `honoured` that carries a value (None, {} and [] are no value; False is one)."""
    why = f"is not honoured by the queue; only {', '.join(sorted(honoured))} may be set here"
    allowed = honoured | IGNORED
    return [Problem(_at(where, str(k)), why) for k, v in section.items() if k not in allowed and _has_value(v)]


def _has_value(value: Any) -> bool:
    return value is not None and value != {} and value != []


def _at(where: str, name: str) -> str:
    return f"{where}.{name}" if where else name


def _configuration(run_configuration: Any, config_path: str | None) -> Mapping[str, Any]:
    """The run configuration as a mapping: a dict, ZenML's `PipelineRunConfiguration`, or a YAML file."""
    if run_configuration is not None and config_path is not None:
        raise InvalidRequest(details=[Problem("config_path", "give run_configuration or config_path, not both")])
    if config_path is not None:
        return _load_yaml(Path(config_path))
    if run_configuration is None:
        return {}
    if hasattr(run_configuration, "model_dump"):  # ZenML's PipelineRunConfiguration, without importing ZenML
        return dict(run_configuration.model_dump(exclude_unset=True))
    if not isinstance(run_configuration, Mapping):
        raise InvalidRequest(details=[Problem("run_configuration", "must be a mapping or a PipelineRunConfiguration")])
    return run_configuration


def _load_yaml(path: Path) -> Mapping[str, Any]:
    import yaml  # the worker extra's; a producer that passes config_path needs PyYAML

    try:
        loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise InvalidRequest(details=[Problem("config_path", f"cannot read {path}: {exc}")]) from None
    if not isinstance(loaded, Mapping):
        raise InvalidRequest(details=[Problem("config_path", f"{path} does not hold a run configuration mapping")])
    return loaded


def _refuse_given(**arguments: Any) -> None:
    given = [name for name, value in arguments.items() if value is not None]
    why = "is set by the worker's ZenML connection, not per request"
    if given:
        raise InvalidRequest(details=[Problem(name, why) for name in given])
