"""The gateway benchmark's baseline: a bare FastAPI endpoint that only does one `LPUSH` (redis.asyncio).

BENCH_BARE_REDIS_URL=redis://127.0.0.1:6379/14 uvicorn --factory benchmarks.bare_lpush_app:create_app
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import redis.asyncio as aioredis
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse


def create_app() -> FastAPI:
    """POST /lpush pushes the raw body onto a list and answers 202."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.redis = aioredis.Redis.from_url(os.environ.get("BENCH_BARE_REDIS_URL", "redis://127.0.0.1:6379/14"))
        yield
        await app.state.redis.aclose()

    app = FastAPI(lifespan=lifespan)

    @app.post("/lpush", status_code=202)
    async def lpush(request: Request) -> JSONResponse:
        await request.app.state.redis.lpush(os.environ.get("BENCH_BARE_QUEUE", "bench-bare"), await request.body())
        return JSONResponse({"status": "queued"}, status_code=202)

    return app
