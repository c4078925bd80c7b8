"""A FastAPI app whose "retrain" endpoint enqueues a run of the tutorial pipeline and answers 202 at once.

Run it with `uvicorn examples.webapp.fastapi_app:app` (see this folder's README).
The HTTP request never waits for the run: it costs one Redis call, bounded by
`TRIGGER_ENQUEUE_TIMEOUT`, and a down Redis gives a prompt 503.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Annotated

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from redis.exceptions import RedisError

from examples.webapp.retrain import (
    STATE_UNAVAILABLE,
    RetrainBody,
    accepted,
    body_problems,
    problem,
    queue_unavailable,
    retrain_request,
)
from producers import AsyncTriggerClient, InvalidRequest, UnknownRequest

router = APIRouter()


def triggers(request: Request) -> AsyncTriggerClient:
    """The app's one client, made in its lifespan (its pool is bound to the server's event loop)."""
    return request.app.state.triggers


Triggers = Annotated[AsyncTriggerClient, Depends(triggers)]


@router.post(
    "/retrain",
    status_code=202,
    responses={
        202: {"description": "queued: the request id and the URL of its state"},
        422: {"description": "an invalid body: every problem with its path"},
        503: {"description": "the queue did not take the request within the enqueue timeout"},
    },
)
async def retrain(body: RetrainBody, request: Request, client: Triggers) -> JSONResponse:
    """Queue a retrain and answer 202 with the request id and where to follow it."""
    try:
        trigger_request = retrain_request(body)
    except InvalidRequest as exc:
        return JSONResponse(problem("invalid_request", exc), status_code=422)
    request_id = await client.try_send(trigger_request)
    if request_id is None:
        return JSONResponse(queue_unavailable(trigger_request.request_id), status_code=503)
    status_url = str(request.url_for("retrain_status", request_id=request_id))
    return JSONResponse(accepted(request_id, status_url), status_code=202, headers={"Location": status_url})


@router.get(
    "/retrain/{request_id}",
    name="retrain_status",
    responses={404: {"description": "no request is known under this id"}, 503: {"description": "Redis is down"}},
)
async def retrain_status(request_id: str, client: Triggers) -> JSONResponse:
    """The request's state, as `trigger status --json` shows it; 404 for an id nothing is known under."""
    try:
        state = await client.status(request_id)
    except UnknownRequest as exc:
        return JSONResponse(problem("unknown_request", exc), status_code=404)
    except RedisError:
        return JSONResponse(STATE_UNAVAILABLE, status_code=503)
    return JSONResponse(state.public_dict())


async def invalid_body(request: Request, exc: RequestValidationError) -> JSONResponse:
    """A 422 in the same shape as every other error here (and as the Flask app's)."""
    return JSONResponse(problem("invalid_request", body_problems(exc.errors())), status_code=422)


def create_app(make_client: Callable[[], AsyncTriggerClient] = AsyncTriggerClient.from_env) -> FastAPI:
    """The app; its client is made at startup (from `TRIGGER_*` by default) and closed at shutdown."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with make_client() as client:
            app.state.triggers = client
            yield

    app = FastAPI(title="Retrain on demand", lifespan=lifespan)
    app.add_exception_handler(RequestValidationError, invalid_body)
    app.include_router(router)
    return app


app = create_app()
