"""`trigger templates`: create, list, show and delete run templates (named ZenML snapshots)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click
import yaml

from producers.cli import parse_assignment, parse_step_assignments
from producers.errors import Problem
from worker.catalog import note_template_change
from worker.errors import InvalidParameters
from worker.settings import WorkerSettings
from worker.templates import NAME_PATTERN, Template, TemplateStore, allow_problems, split_run_config


@click.group()
def templates() -> None:
    """Run templates: named, versioned ZenML snapshots with controlled overrides."""


def _load_config(path: str | None) -> dict[str, Any]:
    if path is None:
        return {}
    try:
        data = yaml.safe_load(Path(path).read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise click.BadParameter(f"{path}: {_one_line(exc)}", param_hint="--config") from None
    problem = _config_shape_problem(data)
    if problem:
        raise click.BadParameter(f"{path}: {problem}", param_hint="--config")
    return data


def _one_line(exc: BaseException) -> str:
    """An error message folded onto one line (YAML and pydantic messages span several)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip() and "errors.pydantic.dev" not in line]
    return " ".join(lines)


def _config_shape_problem(data: Any) -> str | None:
    """What is wrong with the shape of a run configuration, before ZenML sees it."""
    if not isinstance(data, dict):
        return "expected a mapping (a ZenML run configuration)"
    if not isinstance(data.get("parameters") or {}, dict):
        return "'parameters' must be a mapping of name to value"
    steps = data.get("steps") or {}
    if not isinstance(steps, dict):
        return "'steps' must be a mapping of step name to its configuration"
    for name, options in steps.items():
        if not isinstance(options or {}, dict) or not isinstance((options or {}).get("parameters") or {}, dict):
            return f"'steps.{name}' must be a mapping, with 'parameters' a mapping"
    return None


def _fail(problems: list[Problem]) -> None:
    raise click.ClickException("invalid template: " + "; ".join(str(p) for p in problems))


@templates.command("create")
@click.argument("name")
@click.option("--pipeline", "pipeline_name", required=True, help="A registered pipeline.")
@click.option("--config", "config_path", type=click.Path(exists=True, dir_okay=False), help="ZenML run config YAML.")
@click.option("-p", "--param", "params", multiple=True, metavar="KEY=VALUE", help="Pipeline-level parameter.")
@click.option("-s", "--step-param", "step_params", multiple=True, metavar="STEP.KEY=VALUE", help="Step parameter.")
@click.option("--allow", "allow", multiple=True, metavar="PATH", help="A parameter path callers may override.")
@click.option("--description", default=None)
@click.option("--json", "as_json", is_flag=True)
def create(
    name: str,
    pipeline_name: str,
    config_path: str | None,
    params: tuple[str, ...],
    step_params: tuple[str, ...],
    allow: tuple[str, ...],
    description: str | None,
    as_json: bool,
) -> None:
    """Snapshot a registered pipeline with its configuration as the next version of NAME."""
    from pipelines.registry import PipelineRegistry
    from worker.signature import inspect_pipeline
    from worker.validation import plan_run, worker_context

    if not NAME_PATTERN.match(name):
        raise click.ClickException(
            f"template name {name!r}: use letters, digits and _ . : / - (no '@', which marks versions)"
        )
    settings = WorkerSettings()
    entry = PipelineRegistry.from_paths(settings.pipelines).get(pipeline_name)
    if entry is None:
        raise click.ClickException(f"pipeline {pipeline_name!r} is not registered (see `trigger pipelines`)")
    signature = inspect_pipeline(entry.pipeline)
    parameters, steps, run_config = split_run_config(_load_config(config_path))
    parameters.update(dict(parse_assignment(p, "-p") for p in params))
    for step, values in parse_step_assignments(step_params).items():
        steps.setdefault(step, {}).update(values)
    problems = allow_problems(signature, allow)
    try:
        plan = plan_run(signature, parameters, {k: v for k, v in steps.items() if v}, worker_context(settings))
    except InvalidParameters as exc:
        problems += exc.details
    if problems:
        _fail(problems)
    try:
        template = TemplateStore().create(
            name, entry.pipeline, plan.parameters, plan.steps, allow, run_config, description
        )
    except (TypeError, ValueError) as exc:  # ZenML refusing a run-config option
        raise click.ClickException(f"ZenML refused the template's run configuration: {_one_line(exc)}") from None
    click.echo(
        json.dumps(template.describe())
        if as_json
        else f"created template {template.ref} (ZenML snapshot {template.snapshot_id}) of {template.pipeline_name}"
    )
    _tell_catalog(settings)


@templates.command("list")
@click.option("--json", "as_json", is_flag=True)
def list_templates(as_json: bool) -> None:
    """Every version of every template."""
    found = TemplateStore().list()
    if as_json:
        click.echo(json.dumps([t.describe() for t in found]))
        return
    for template in found:
        allowed = ", ".join(sorted(template.allow)) or "nothing"
        click.echo(f"{template.ref:<30} {template.pipeline_name:<24} overridable: {allowed}")


@templates.command("show")
@click.argument("ref")
@click.option("--json", "as_json", is_flag=True)
def show(ref: str, as_json: bool) -> None:
    """One template (NAME for the latest version, NAME@VERSION, or a snapshot id)."""
    template = TemplateStore().get(ref)
    click.echo(json.dumps(template.describe(), indent=None if as_json else 2))


@templates.command("delete")
@click.argument("ref")
def delete(ref: str) -> None:
    """Delete NAME@VERSION, or every version of NAME."""
    removed: list[Template] = TemplateStore().delete(ref)
    for template in removed:
        click.echo(f"deleted {template.ref} (ZenML snapshot {template.snapshot_id})")
    _tell_catalog(WorkerSettings())


def _tell_catalog(settings: WorkerSettings) -> None:
    """Early checks stop trusting the catalog's templates until the worker lists them again."""
    warning = note_template_change(settings)
    if warning:
        click.echo(f"Warning: {warning}", err=True)
