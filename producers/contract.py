"""The wire contract: one frozen trigger request model, encoded and decoded only here.

Its JSON follows ZenML's run-template REST payload (`steps -> <step> -> parameters`)
so people who know ZenML read it at once.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any, Literal

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    JsonValue,
    ValidationError,
    model_validator,
)

from producers.errors import MalformedRequest, PayloadTooLarge, Problem

SCHEMA_VERSION = 1
NAME_PATTERN = r"^[A-Za-z0-9_.:@/-]+$"
ID_PATTERN = r"^[A-Za-z0-9_.:-]+$"


def new_request_id() -> str:
    """A fresh, unique request id."""
    return uuid.uuid4().hex


def utc_now() -> datetime:
    """Timezone-aware now, so timestamps compare across machines."""
    return datetime.now(timezone.utc)


class StepOverride(BaseModel):
    """The configuration a request sets for one step: its parameters."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    parameters: dict[str, JsonValue] = Field(default_factory=dict)


class TriggerRequest(BaseModel):
    """A request to run a registered pipeline, or a named template of one."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    schema_version: Literal[1] = SCHEMA_VERSION
    request_id: str = Field(default_factory=new_request_id, min_length=1, max_length=128, pattern=ID_PATTERN)
    pipeline_name: str | None = Field(default=None, min_length=1, max_length=256, pattern=NAME_PATTERN)
    template: str | None = Field(default=None, min_length=1, max_length=256, pattern=NAME_PATTERN)
    parameters: dict[str, JsonValue] = Field(default_factory=dict)
    steps: dict[str, StepOverride] = Field(default_factory=dict)
    idempotency_key: str | None = Field(default=None, min_length=1, max_length=512)
    source: str = Field(default="unknown", min_length=1, max_length=256)
    created_at: AwareDatetime = Field(default_factory=utc_now)
    metadata: dict[str, JsonValue] = Field(default_factory=dict)
    replay_of: str | None = Field(default=None, max_length=128, pattern=ID_PATTERN)

    @model_validator(mode="after")
    def _one_target(self) -> TriggerRequest:
        if (self.pipeline_name is None) == (self.template is None):
            raise ValueError("exactly one of 'pipeline_name' or 'template' must be set")
        return self

    @property
    def target(self) -> str:
        """What the request asks to run, for logs: the pipeline or `template:NAME`."""
        return self.pipeline_name or f"template:{self.template}"

    def step_parameters(self) -> dict[str, dict[str, Any]]:
        """`{step: {param: value}}`, the plain form of `steps`."""
        return {name: dict(step.parameters) for name, step in self.steps.items()}


def normalize_steps(steps: Mapping[str, Any] | None) -> dict[str, StepOverride]:
    """Accept `{step: {param: v}}` (the Python API's short form) or the wire's `{step: {"parameters": {...}}}`."""
    result: dict[str, StepOverride] = {}
    for name, value in (steps or {}).items():
        if isinstance(value, StepOverride):
            result[name] = value
        elif isinstance(value, Mapping) and set(value) == {"parameters"} and isinstance(value["parameters"], Mapping):
            result[name] = StepOverride(parameters=dict(value["parameters"]))
        else:
            result[name] = StepOverride(parameters=dict(value))
    return result


def check_payload_size(payload: bytes | str, limit: int) -> None:
    """Raise `PayloadTooLarge` when the encoded request is over `limit` bytes (checked on both sides)."""
    size = len(payload.encode() if isinstance(payload, str) else payload)
    if size > limit:
        raise PayloadTooLarge(details=[Problem("", f"{size} bytes, over the {limit}-byte limit")])


def encode_request(request: TriggerRequest) -> str:
    """The request's wire form: compact JSON text."""
    return request.model_dump_json(exclude_none=True)


def problems_from_validation(error: ValidationError, prefix: str = "") -> list[Problem]:
    """Turn pydantic's errors into `Problem`s with dotted paths."""
    problems = []
    for item in error.errors(include_url=False):
        path = ".".join(str(part) for part in item["loc"])
        if prefix:
            path = f"{prefix}.{path}" if path else prefix
        problems.append(Problem(path, item["msg"]))
    return problems


def decode_request(raw: bytes | str) -> TriggerRequest:
    """Parse wire bytes into a request; every failure is a `MalformedRequest` keeping `raw`."""
    try:
        text = raw.decode("utf-8") if isinstance(raw, bytes) else raw
        data = json.loads(text)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise MalformedRequest(raw=raw, details=[Problem("", f"not valid UTF-8 JSON: {exc}")]) from None
    if not isinstance(data, dict):
        found = type(data).__name__
        raise MalformedRequest(raw=raw, details=[Problem("", f"expected a JSON object, got {found}")])
    try:
        return TriggerRequest.model_validate(data)
    except ValidationError as exc:
        raise MalformedRequest(raw=raw, details=problems_from_validation(exc)) from None


def peek_request_id(raw: bytes | str) -> str | None:
    """The `request_id` of a payload that failed to decode, when one can be read safely."""
    try:
        data = json.loads(raw)
    except (ValueError, TypeError, RecursionError):
        return None
    candidate = data.get("request_id") if isinstance(data, dict) else None
    if isinstance(candidate, str) and 0 < len(candidate) <= 128:
        try:
            TriggerRequest.model_validate({"request_id": candidate, "pipeline_name": "x"})
        except ValidationError:
            return None
        return candidate
    return None
