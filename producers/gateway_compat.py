"""Drop-in routes for callers that already exist: the tutorial's `/trigger` and `/trigger-template`, and
ZenML's `POST /api/v1/run_templates/{template}/runs`. Same bodies; they answer 202 and queue instead of
blocking for the run, and refuse with 422 (every problem, its path) what would otherwise be ignored.
"""

from __future__ import annotations

import json
from typing import Any, TypeVar

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, ValidationError

from producers.client import request_from
from producers.contract import TriggerRequest, problems_from_validation
from producers.errors import InvalidRequest, MalformedRequest, Problem
from producers.gateway_auth import Caller
from producers.gateway_bodies import JSONResponse
from producers.gateway_submit import early_check_note, received, submit
from producers.zenml_compat import run_configuration_fields

router = APIRouter(tags=["compatibility"])
Model = TypeVar("Model", bound=BaseModel)
QUEUED_NOTE = "queued, not run yet: the run happens in a worker; follow it at status_url"


class StepParameters(BaseModel):
    """The tutorial's `StepParameter`: a step's parameters."""

    model_config = ConfigDict(extra="forbid")
    parameters: dict[str, Any] = {}


class TutorialTrigger(BaseModel):
    """The tutorial's `PipelineRequest` body for `POST /trigger`."""

    model_config = ConfigDict(extra="forbid")
    pipeline_name: str
    steps: dict[str, StepParameters] = {}
    config_path: str | None = None


class TutorialTemplateTrigger(BaseModel):
    """The tutorial's `TemplateRunRequest` body for `POST /trigger-template` (any template ref, not only a UUID)."""

    model_config = ConfigDict(extra="forbid")
    template_id: str
    steps: dict[str, StepParameters] = {}


def body_schema(model: type[BaseModel]) -> dict[str, Any]:
    """OpenAPI for a body read by hand (so its problems come back with our paths)."""
    schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
    schema.pop("$defs", None)
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


@router.post("/trigger", status_code=202, openapi_extra=body_schema(TutorialTrigger))
async def tutorial_trigger(request: Request) -> JSONResponse:
    """The tutorial's `/trigger`: run a registered pipeline with step parameters; 202 instead of blocking."""
    caller, raw = await received(request)
    body = parsed(raw, TutorialTrigger)
    if body.config_path is not None:
        problem = "is not honoured: a caller does not choose files on the worker; set parameters instead"
        raise InvalidRequest(details=[Problem("config_path", problem)])
    steps = {name: step.parameters for name, step in body.steps.items()}
    queued = request_from(body.pipeline_name, steps=steps, source="tutorial-api")
    return await enqueue(request, caller, queued, f"Pipeline '{body.pipeline_name}' {QUEUED_NOTE}")


@router.post("/trigger-template", status_code=202, openapi_extra=body_schema(TutorialTemplateTrigger))
async def tutorial_trigger_template(request: Request) -> JSONResponse:
    """The tutorial's `/trigger-template`: run a template (name, `NAME@VERSION` or snapshot id)."""
    caller, raw = await received(request)
    body = parsed(raw, TutorialTemplateTrigger)
    steps = {name: step.parameters for name, step in body.steps.items()}
    queued = request_from(template=body.template_id, steps=steps, source="tutorial-api")
    extra = {"template_id": body.template_id}
    return await enqueue(request, caller, queued, f"Template '{body.template_id}' {QUEUED_NOTE}", extra)


@router.post(
    "/api/v1/run_templates/{template}/runs",
    status_code=202,
    openapi_extra={"requestBody": {"required": True, "content": {"application/json": {"schema": {"type": "object"}}}}},
)
async def zenml_run_template(template: str, request: Request) -> JSONResponse:
    """ZenML's REST route: a run configuration body; `steps.<step>.parameters` and `parameters` are honoured."""
    caller, raw = await received(request)
    configuration = parsed_json(raw)
    if not isinstance(configuration, dict):
        raise MalformedRequest(details=[Problem("", "expected a run configuration object")])
    parameters, steps = run_configuration_fields(configuration)
    queued = request_from(template=template, parameters=parameters, steps=steps, source="zenml-rest")
    return await enqueue(request, caller, queued, f"Template '{template}' {QUEUED_NOTE}", {"template_id": template})


def parsed_json(raw: bytes) -> Any:
    """The body as JSON."""
    try:
        return json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise MalformedRequest(details=[Problem("", f"not valid UTF-8 JSON: {exc}")]) from None


def parsed(raw: bytes, model: type[Model]) -> Model:
    """The body validated by `model`, every problem with its path."""
    try:
        return model.model_validate(parsed_json(raw))
    except ValidationError as exc:
        raise MalformedRequest(details=problems_from_validation(exc)) from None


async def enqueue(
    request: Request, caller: Caller, queued: TriggerRequest, message: str, extra: dict[str, Any] | None = None
) -> JSONResponse:
    """Send and answer 202, keeping the tutorial's `status`/`message`/`run_id` fields (the run id comes later)."""
    submitted = await submit(request, caller, queued)
    request_id = submitted.trigger.request_id
    status_url = f"{request.base_url}v1/triggers/{request_id}"
    body = {"status": "success", "queued": True, "message": message, "run_id": None, "request_id": request_id}
    body |= {"status_url": status_url, "early_check": early_check_note(submitted.checked), **(extra or {})}
    headers = {"Location": status_url} | ({"Idempotent-Replayed": "true"} if submitted.replayed else {})
    return JSONResponse(body, status_code=202, headers=headers)
