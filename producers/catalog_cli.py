"""`trigger pipelines` from the catalog: what the workers accept, readable where ZenML is not installed."""

from __future__ import annotations

import json
from typing import Any

import click

from producers.catalog import published_at_text
from producers.client import TriggerClient


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option("--catalog", "from_catalog", is_flag=True, help="Read the workers' catalog (always, without ZenML).")
def pipelines(as_json: bool, from_catalog: bool) -> None:
    """List registered pipelines, their steps and parameters, as the workers' catalog lists them."""
    show_catalog_pipelines(as_json)


def show_catalog_pipelines(as_json: bool) -> None:
    """Print the catalog's pipelines; a note on stderr says whose catalog, and whether it is stale."""
    read = TriggerClient.from_env().catalog.read()
    if read.catalog is None:
        raise click.ClickException(f"no catalog to list pipelines from: {read.unusable}")
    stale = f"; {read.unusable}" if read.unusable else ""
    click.echo(f"from the workers' catalog, {published_at_text(read.catalog)}{stale}", err=True)
    described = [pipeline.model_dump(mode="json") for pipeline in read.catalog.pipelines]
    if as_json:
        click.echo(json.dumps(described))
        return
    for pipeline in described:
        print_pipeline(pipeline)


def print_pipeline(pipeline: dict[str, Any]) -> None:
    """One pipeline as `trigger pipelines` prints it (from the worker's registry or from the catalog)."""
    click.echo(f"{pipeline['name']}  ({pipeline['source']})")
    for param in pipeline["parameters"]:
        click.echo(f"  parameters.{_param_line(param)}")
    for step in pipeline["steps"]:
        for param in step["parameters"]:
            source = param.get("from_pipeline_parameter")
            fed = f"  -> parameters.{source}" if source else ""
            click.echo(f"  steps.{step['name']}.parameters.{_param_line(param)}{fed}")
        for name, producer in step["artifact_inputs"].items():
            click.echo(f"  steps.{step['name']}.{name}: artifact from {producer} (not settable)")


def _param_line(param: dict[str, Any]) -> str:
    if param["required"]:
        default = "required"
    elif param.get("default_exact", True):
        default = f"default {param['default']!r}"
    else:
        default = f"default {param['default']}"
    return f"{param['name']}: {param['type']} ({default})"
