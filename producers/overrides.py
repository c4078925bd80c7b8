"""A template's configuration with a request's overrides on top: one rule, for the worker and the early check."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

Feeder = Callable[[str, str], "str | None"]
"""`(step, parameter) -> the pipeline argument that feeds it`, or None."""


def merged_overrides(
    base_parameters: Mapping[str, Any],
    base_steps: Mapping[str, Mapping[str, Any]],
    feeder: Feeder,
    parameters: Mapping[str, Any],
    steps: Mapping[str, Mapping[str, Any]],
) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """The base (template) parameters and step parameters with the request's on top.

    A step-level override of a parameter that a pipeline argument feeds replaces the base's value
    of that argument, so it cannot conflict with it.
    """
    merged_parameters = dict(base_parameters)
    for step, params in steps.items():
        for name in params:
            fed_by = feeder(step, name)
            if fed_by is not None and fed_by not in parameters:
                merged_parameters.pop(fed_by, None)
    merged_parameters.update(parameters)
    merged_steps = {name: dict(params) for name, params in base_steps.items()}
    for name, params in steps.items():
        merged_steps.setdefault(name, {}).update(params)
    return merged_parameters, merged_steps
