"""What the gateway reads and answers: bounded bodies, JSON answers that can always be encoded, its OpenAPI."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse as _StarletteJSON

from producers.contract import TriggerRequest
from producers.errors import PayloadTooLarge, Problem, TriggerError

REF_TEMPLATE = "#/components/schemas/{model}"


class JSONResponse(_StarletteJSON):
    """JSON with non-ASCII escaped: text from a body (even a lone surrogate) is always encodable, never a 500."""

    def render(self, content: Any) -> bytes:
        return json.dumps(content, ensure_ascii=True, separators=(",", ":")).encode("ascii")


async def read_body(request: Request, limit: int) -> bytes:
    """The raw body, refused as soon as it passes `limit` bytes (a huge body is never held whole)."""
    received = bytearray()
    async for chunk in request.stream():
        received += chunk
        if len(received) > limit:
            raise PayloadTooLarge(details=[Problem("", f"the body is over the {limit}-byte limit")])
    return bytes(received)


def accepted(
    request_id: str, status_url: str, replayed: bool = False, early_check: str | None = None, status: str = "queued"
) -> JSONResponse:
    """202: queued or scheduled (or, for a retried idempotent POST, queued before), with where to follow it."""
    body = {"request_id": request_id, "status_url": status_url, "status": status}
    if early_check is not None:
        body["early_check"] = early_check
    headers = {"Location": status_url} | ({"Idempotent-Replayed": "true"} if replayed else {})
    return JSONResponse(body, status_code=202, headers=headers)


def error_body(code: str, message: str, **extra: Any) -> dict[str, Any]:
    """`{"error": code, "message": ...}`: the shape of every failure the gateway answers."""
    return {"error": code, "message": message, **extra}


def invalid_body(code: str, exc: Exception) -> dict[str, Any]:
    """A refused request with every problem and its path."""
    details = [d.as_dict() for d in exc.details] if isinstance(exc, TriggerError) else []
    return error_body(code, str(exc), problems=details)


def unavailable_body(exc: Exception) -> dict[str, Any]:
    """Redis did not answer in time: say so (the URL's password is never in the message)."""
    message = str(exc) if isinstance(exc, TriggerError) else f"Redis is unavailable: {type(exc).__name__}"
    return error_body("queue_unavailable", message)


def request_body_openapi() -> dict[str, Any]:
    """The POST body as OpenAPI sees it: the wire contract's own JSON Schema."""
    schema = TriggerRequest.model_json_schema(ref_template=REF_TEMPLATE)
    schema.pop("$defs", None)
    content = {"application/json": {"schema": schema}}
    header = {
        "name": "Idempotency-Key",
        "in": "header",
        "required": False,
        "description": "A retried POST with the same key gets the first request's id back",
        "schema": {"type": "string", "minLength": 1, "maxLength": 256},
    }
    return {"requestBody": {"required": True, "content": content}, "parameters": [header]}


def with_components(app: FastAPI) -> Callable[[], dict[str, Any]]:
    """`app.openapi` that also carries the wire contract's nested models under `components/schemas`."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            spec = get_openapi(title=app.title, version=app.version, routes=app.routes)
            defs = TriggerRequest.model_json_schema(ref_template=REF_TEMPLATE).get("$defs", {})
            spec.setdefault("components", {}).setdefault("schemas", {}).update(defs)
            app.openapi_schema = spec
        return app.openapi_schema

    return openapi
