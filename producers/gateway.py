"""The HTTP gateway: a way in for systems that are not Python (webhooks, Node services, CI jobs with curl).

`POST /v1/triggers` takes the wire JSON, checks it, enqueues it with the async client (one Redis
call) and answers 202 at once with the request id and where to follow it; the run happens in a
worker. Every failure is a JSON body with a stable `error` code: 422 with every problem and its
path, 413 for an oversized body, 503 when Redis does not answer within the enqueue timeout. It
never holds a request open for a run, and no input makes it answer 500.

    trigger gateway --port 8080        # or: uvicorn --factory producers.gateway:create_app

`GET /metrics` serves its Prometheus metrics (`producers.gateway_metrics`).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated

from fastapi import APIRouter, Depends, FastAPI, Path, Request
from fastapi.exceptions import RequestValidationError
from redis.exceptions import RedisError

from producers import gateway_compat, gateway_metrics
from producers.async_client import AsyncTriggerClient
from producers.catalog import Catalog
from producers.contract import ID_PATTERN, decode_request
from producers.errors import (
    EnqueueError,
    Forbidden,
    InvalidRequest,
    PayloadTooLarge,
    Problem,
    Unauthorized,
    UnknownRequest,
)
from producers.gateway_auth import Caller, GatewayAuth, GatewaySettings
from producers.gateway_bodies import (
    JSONResponse,
    accepted,
    error_body,
    invalid_body,
    request_body_openapi,
    unavailable_body,
    with_components,
)
from producers.gateway_submit import GatewayCatalog, early_check_note, received, submit

router = APIRouter()
log = logging.getLogger("producers.gateway")


def client_of(request: Request) -> AsyncTriggerClient:
    """The app's one client, made in its lifespan (its connection pool belongs to the server's event loop)."""
    return request.app.state.triggers  # type: ignore[no-any-return]


Triggers = Annotated[AsyncTriggerClient, Depends(client_of)]


def caller_of(request: Request) -> Caller:
    """The caller of a route without a body (`Unauthorized` when the gateway has keys and none is shown)."""
    return request.app.state.auth.authenticate(request.headers, b"")  # type: ignore[no-any-return]


Authenticated = Annotated[Caller, Depends(caller_of)]
RequestId = Annotated[str, Path(min_length=1, max_length=128, pattern=ID_PATTERN)]


@router.post(
    "/v1/triggers",
    status_code=202,
    openapi_extra=request_body_openapi(),
    responses={
        202: {"description": "queued: the request id and the URL of its state"},
        413: {"description": "the body is over the payload limit"},
        422: {"description": "an invalid request: every problem with its path"},
        503: {"description": "Redis did not take the request within the enqueue timeout"},
    },
)
async def create_trigger(request: Request) -> JSONResponse:
    """Check and enqueue one trigger request; answer 202 with its id and status URL at once.

    Takes the plain `Request` (no FastAPI dependencies or header parameters to solve): this is
    the hot path, and its body is checked by the wire contract itself.
    """
    caller, body = await received(request)
    submitted = await submit(request, caller, decode_request(body))
    request_id = submitted.trigger.request_id
    status_url = f"{request.base_url}v1/triggers/{request_id}"
    note = early_check_note(submitted.checked)
    return accepted(request_id, status_url, submitted.replayed, note, submitted.status)


@router.get(
    "/v1/triggers/{request_id}",
    responses={404: {"description": "no request with that id is known"}, 503: {"description": "Redis is down"}},
)
async def get_trigger(request: Request, request_id: RequestId, client: Triggers, caller: Authenticated) -> JSONResponse:
    """The request's state, as `trigger status --json` prints it; a key sees only what it may trigger
    (anything else is answered like an unknown id, so ids cannot be probed)."""
    state = await client.status(request_id)
    if not request.app.state.auth.may_read(caller, state):
        raise UnknownRequest(f"no request with id {request_id!r} is known (never sent, or expired)")
    return JSONResponse(state.public_dict())


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """The process answers (liveness); says nothing about Redis."""
    return {"status": "ok"}


@router.get("/readyz", responses={503: {"description": "Redis does not answer, or no worker published a catalog"}})
async def readyz(request: Request, client: Triggers) -> JSONResponse:
    """Ready when Redis answers within the timeouts and a usable catalog is published."""
    try:
        await client.redis.ping()
    except (RedisError, OSError) as exc:
        return JSONResponse(error_body("not_ready", f"Redis does not answer: {type(exc).__name__}"), 503)
    read = await request.app.state.catalog.read()
    if read.catalog is None or read.unusable:
        return JSONResponse(error_body("not_ready", read.unusable or "no catalog"), 503)
    return JSONResponse({"status": "ready", "catalog": read.catalog.content_hash})


@router.get("/v1/pipelines", responses={503: {"description": "no usable catalog is published"}})
async def pipelines(request: Request, _: Authenticated) -> JSONResponse:
    """The registered pipelines with their parameters, step parameters and JSON Schemas, from the catalog."""
    catalog = await published(request)
    return JSONResponse({"pipelines": [p.model_dump(mode="json") for p in catalog.pipelines]})


@router.get("/v1/templates", responses={503: {"description": "no usable catalog is published"}})
async def templates(request: Request, _: Authenticated) -> JSONResponse:
    """The templates and the paths each allows or locks, from the catalog."""
    catalog = await published(request)
    return JSONResponse(catalog.templates.model_dump(mode="json"))


async def published(request: Request) -> Catalog:
    """The catalog, or `NoCatalog` (503) with the reason."""
    read = await request.app.state.catalog.read()
    if read.catalog is None:
        raise NoCatalog(read.unusable or "no catalog")
    return read.catalog


class NoCatalog(Exception):
    """No worker has published a usable catalog for this queue."""


def create_app(
    settings: GatewaySettings | None = None, client: AsyncTriggerClient | None = None, auth: GatewayAuth | None = None
) -> FastAPI:
    """The gateway for `settings` (from `TRIGGER_*` when None); `client` and `auth` replace what it would make.

    The keys file is read here, at start: a bad one stops the gateway with the key and field named.
    """
    settings = settings or GatewaySettings()
    auth = auth or GatewayAuth.from_settings(settings)
    if auth.open:
        log.warning("trigger.gateway_open: no TRIGGER_KEYS_FILE, so anyone who reaches this port may trigger")

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if client is None:  # made here, inside the server's event loop, which its pool belongs to
            serve(app, AsyncTriggerClient.from_settings(settings), auth)
        yield
        await app.state.triggers.aclose()

    app = FastAPI(title="ZenML queue triggers", version="1", lifespan=lifespan, default_response_class=JSONResponse)
    if client is not None:
        serve(app, client, auth)
    app.include_router(router)
    app.include_router(gateway_compat.router)
    app.include_router(gateway_metrics.router)
    app.state.metrics = gateway_metrics.GatewayMetrics()
    app.add_middleware(gateway_metrics.MetricsMiddleware, metrics=app.state.metrics)
    add_error_handlers(app)
    app.openapi = with_components(app)  # type: ignore[method-assign]
    return app


def serve(app: FastAPI, client: AsyncTriggerClient, auth: GatewayAuth) -> None:
    """Give the app its client, its view of the catalog and its keys."""
    app.state.triggers = client
    app.state.catalog = GatewayCatalog(client)
    app.state.auth = auth


def add_error_handlers(app: FastAPI) -> None:
    """Every known failure as a JSON body with a stable `error` code; nothing becomes a 500."""
    app.add_exception_handler(PayloadTooLarge, _too_large)
    app.add_exception_handler(InvalidRequest, _invalid)
    app.add_exception_handler(Unauthorized, _unauthorized)
    app.add_exception_handler(Forbidden, _forbidden)
    app.add_exception_handler(RequestValidationError, _invalid_http)
    app.add_exception_handler(EnqueueError, _unavailable)
    app.add_exception_handler(RedisError, _unavailable)
    app.add_exception_handler(UnknownRequest, _unknown)
    app.add_exception_handler(NoCatalog, _no_catalog)


async def _too_large(_: Request, exc: Exception) -> JSONResponse:
    return JSONResponse(invalid_body("payload_too_large", exc), status_code=413)


async def _unauthorized(_: Request, exc: Exception) -> JSONResponse:
    headers = {"WWW-Authenticate": 'Bearer realm="zenml-triggers"'}
    return JSONResponse(invalid_body("unauthorized", exc), status_code=401, headers=headers)


async def _forbidden(_: Request, exc: Exception) -> JSONResponse:
    return JSONResponse(invalid_body("forbidden", exc), status_code=403)


async def _invalid(_: Request, exc: Exception) -> JSONResponse:
    return JSONResponse(invalid_body("invalid_request", exc), status_code=422)


async def _invalid_http(_: Request, exc: Exception) -> JSONResponse:
    """A header or path that does not fit (FastAPI's own check), in the same shape, without echoing input."""
    assert isinstance(exc, RequestValidationError)
    problems = [Problem(".".join(str(p) for p in e["loc"]), str(e["msg"])) for e in exc.errors()]
    return JSONResponse(invalid_body("invalid_request", InvalidRequest(details=problems)), status_code=422)


async def _unavailable(request: Request, exc: Exception) -> JSONResponse:
    return JSONResponse(unavailable_body(exc), status_code=503)


async def _no_catalog(_: Request, exc: Exception) -> JSONResponse:
    return JSONResponse(error_body("no_catalog", f"{exc}; start a worker for this queue"), status_code=503)


async def _unknown(_: Request, exc: Exception) -> JSONResponse:
    return JSONResponse(error_body("unknown_request", str(exc)), status_code=404)
