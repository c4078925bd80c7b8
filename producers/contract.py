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
from pydantic_core import InitErrorDetails, PydanticCustomError, PydanticSerializationError

from producers.errors import MalformedRequest, PayloadTooLarge, Problem
from producers.priority import MOST_URGENT, ROUTINE

SCHEMA_VERSION = 2
"""Version 2 added `coalesce_key`; a worker reads every older version."""
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

    schema_version: Literal[1, 2] = SCHEMA_VERSION
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
    coalesce_key: str | None = Field(default=None, min_length=1, max_length=512)
    priority: int | None = Field(
        default=None,
        ge=ROUTINE,
        le=MOST_URGENT,
        description="0-9, higher is more urgent: 9 is served first, 0 (also what no priority means) last.",
    )
    not_before: AwareDatetime | None = Field(
        default=None,
        description="Run no earlier than this (with a timezone); the producer holds it in the retry schedule.",
    )

    @model_validator(mode="after")
    def _one_target(self) -> TriggerRequest:
        if (self.pipeline_name is None) == (self.template is None):
            raise ValueError("exactly one of 'pipeline_name' or 'template' must be set")
        return self

    @model_validator(mode="after")
    def _fields_of_its_version(self) -> TriggerRequest:
        if self.schema_version < 2 and self.coalesce_key is not None:
            raise ValueError("'coalesce_key' needs schema_version 2")
        return self

    @model_validator(mode="before")
    @classmethod
    def _encodable(cls, data: Any) -> Any:
        """Refuse text that has no UTF-8 form here, where the request is built, not when it is encoded."""
        try:
            problems = [Problem(p, UNENCODABLE) for p in unencodable_paths(data)] if isinstance(data, dict) else []
        except RecursionError:
            problems = [Problem("", "is nested too deeply")]
        if problems:
            raise MalformedRequest(details=problems)  # not a ValueError: pydantic lets it through as it is
        return data

    @property
    def target(self) -> str:
        """What the request asks to run, for logs: the pipeline or `template:NAME`."""
        return self.pipeline_name or f"template:{self.template}"

    def step_parameters(self) -> dict[str, dict[str, Any]]:
        """`{step: {param: value}}`, the plain form of `steps`."""
        return {name: dict(step.parameters) for name, step in self.steps.items()}


UNENCODABLE = "holds a lone surrogate (such as \\ud800), which has no UTF-8 encoding"


def unencodable_paths(value: Any, path: str = "") -> list[str]:
    """Dotted paths of the strings (keys included) in `value` that cannot be encoded as UTF-8."""
    if isinstance(value, str):
        return [] if _encodes(value) else [path]
    if isinstance(value, BaseModel):  # a StepOverride built apart from the request
        value = dict(value)
    if isinstance(value, Mapping):
        found = []
        for key, item in value.items():
            where = f"{path}.{key}" if path else str(key)
            if not _encodes(str(key)):
                found.append(_printable(where))
                continue
            found += unencodable_paths(item, where)
        return found
    if isinstance(value, (list, tuple)):
        return [p for i, item in enumerate(value) for p in unencodable_paths(item, f"{path}.{i}")]
    return []


def _encodes(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _printable(text: str) -> str:
    """`text` with surrogates escaped, so an error about them can itself be stored and shown."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def build_request(**fields: Any) -> TriggerRequest:
    """A request from Python values (`steps` in either form); every problem is a `MalformedRequest` with its path."""
    try:
        return TriggerRequest(**{**fields, "steps": normalize_steps(fields.get("steps"))})
    except ValidationError as exc:
        raise MalformedRequest(details=problems_from_validation(exc)) from None


def normalize_steps(steps: Mapping[str, Any] | None) -> dict[str, StepOverride]:
    """Accept `{step: {param: v}}` (the Python API's short form) or the wire's `{step: {"parameters": {...}}}`.

    A value that does not fit raises a `ValidationError` located from the request's root
    (`steps.train_model.parameters.n_estimators`), as if `TriggerRequest` had found it.
    """
    result: dict[str, StepOverride] = {}
    for name, value in (steps or {}).items():
        if isinstance(value, StepOverride):
            result[name] = value
            continue
        wire = isinstance(value, Mapping) and set(value) == {"parameters"} and isinstance(value["parameters"], Mapping)
        try:
            result[name] = StepOverride(parameters=dict(value["parameters"] if wire else value))
        except ValidationError as exc:
            raise _located(exc, ("steps", name)) from None
    return result


def check_payload_size(payload: bytes | str, limit: int) -> None:
    """Raise `PayloadTooLarge` when the encoded request is over `limit` bytes (checked on both sides)."""
    size = len(payload.encode("utf-8", "surrogatepass") if isinstance(payload, str) else payload)
    if size > limit:
        raise PayloadTooLarge(details=[Problem("", f"{size} bytes, over the {limit}-byte limit")])


def encode_request(request: TriggerRequest) -> str:
    """The request's wire form: compact JSON text (`MalformedRequest` for a model built without validation)."""
    try:
        return request.model_dump_json(exclude_none=True)
    except (PydanticSerializationError, ValueError) as exc:
        raise MalformedRequest(details=[Problem("", _printable(f"cannot be encoded as JSON: {exc}"))]) from None


def problems_from_validation(error: ValidationError, prefix: str = "") -> list[Problem]:
    """Turn pydantic's errors into `Problem`s with dotted paths, without `JsonValue`'s union tags (`.float`)."""
    problems = []
    for item in error.errors(include_url=False):
        path = ".".join(str(part) for part in _without_union_tags(item["loc"]))
        if prefix:
            path = f"{prefix}.{path}" if path else prefix
        problems.append(Problem(_printable(path), _printable(item["msg"])))
    return problems


_JSON_VALUE_TAGS = frozenset({"list", "dict", "str", "bool", "int", "float", "NoneType"})
"""The tags pydantic puts in an error's location inside a `JsonValue`: the union branch it tried."""


def _without_union_tags(loc: tuple[int | str, ...]) -> tuple[int | str, ...]:
    """`loc` without the tag after each `JsonValue` in `parameters.K`, `metadata.K` or `steps.S.parameters.K`.

    Tags sit at known positions (value, key or index, value ...), so a parameter named
    `float` keeps its name.
    """
    inside_step = loc[:1] == ("steps",) and loc[2:3] == ("parameters",)
    start = 4 if inside_step else 2 if loc[:1] in (("parameters",), ("metadata",)) else len(loc)
    kept, rest = list(loc[:start]), list(loc[start:])
    while rest and rest[0] in _JSON_VALUE_TAGS:
        tag = rest.pop(0)
        if tag not in ("list", "dict") or not rest:
            break
        kept.append(rest.pop(0))
    return (*kept, *rest)


def _located(error: ValidationError, prefix: tuple[str, ...]) -> ValidationError:
    """`error` with every location under `prefix` and without union tags; each type and message kept."""

    details: list[InitErrorDetails] = [
        {
            "type": PydanticCustomError(item["type"], item["msg"]),
            "loc": _without_union_tags((*prefix, *item["loc"])),
            "input": item["input"],
        }
        for item in error.errors(include_url=False)
    ]
    return ValidationError.from_exception_data("TriggerRequest", details)


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
    except MalformedRequest as exc:
        raise MalformedRequest(raw=raw, details=exc.details) from None


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
