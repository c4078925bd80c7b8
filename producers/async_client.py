"""`AsyncTriggerClient`: the `TriggerClient` API for asyncio apps, so a handler never blocks its event loop.

It sends the same Lua call with the same keys and arguments (built in `producers.client`),
raises the same errors and is bounded by the same timeouts; only the I/O differs.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from types import TracebackType
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from producers import keys
from producers.cancel import CANCEL_SCRIPT, CANCEL_TRIES, cancel_call, cancelled, kept_changing, stop_run, who_cancels
from producers.catalog import CatalogReader
from producers.client import (
    ENQUEUE_SCRIPT,
    check_replicated,
    enqueue_call,
    enqueue_error,
    note_failed_enqueue,
    queued,
    replica_wait,
    request_from,
    timeouts,
)
from producers.contract import TriggerRequest
from producers.request_index import DEFAULT_LIMIT, RequestQuery, list_requests_async
from producers.run_stop import RunStopper, ZenMLRunStopper
from producers.settings import ProducerSettings
from producers.state import POLL_INTERVAL, RequestState, Status, known_state, parse_state, pause_before


def connect_async(settings: ProducerSettings) -> aioredis.Redis:
    """An asyncio Redis client on one connection pool, every call bounded by the settings' timeouts (no retries);
    with a sentinel URL, of the current primary, as `producers.client.connect`."""
    options = {**timeouts(settings), "retry": Retry(NoBackoff(), 0)}
    address = settings.sentinel()
    if address is None:
        return aioredis.Redis.from_url(settings.redis_url, **options)
    sentinel = Sentinel(address.sentinels, sentinel_kwargs=options, **options)
    return sentinel.master_for(address.master_name, **address.master_options())


class AsyncTriggerClient:
    """Sends trigger requests and reads their state back from asyncio code (FastAPI, aiohttp, …).

    Create it once per process (in the app's lifespan) and reuse it: its pool keeps the
    connections warm. Close it with `aclose()` or use it as an async context manager.
    """

    def __init__(self, client: aioredis.Redis, settings: ProducerSettings | None = None) -> None:
        self.settings = settings or ProducerSettings()
        self.redis = client
        self.failed_enqueues = 0
        self._enqueue = client.register_script(ENQUEUE_SCRIPT)
        self._cancel = client.register_script(CANCEL_SCRIPT)
        self._catalog = CatalogReader(None, self.settings.queue)

    @classmethod
    def from_env(cls) -> AsyncTriggerClient:
        """A client configured from `TRIGGER_*` variables (`TRIGGER_REDIS_URL` above all)."""
        return cls.from_settings(ProducerSettings())

    @classmethod
    def from_settings(cls, settings: ProducerSettings) -> AsyncTriggerClient:
        """A client for explicit settings."""
        return cls(connect_async(settings), settings)

    async def trigger(
        self,
        pipeline_name: str | None = None,
        *,
        template: str | None = None,
        parameters: Mapping[str, Any] | None = None,
        steps: Mapping[str, Any] | None = None,
        idempotency_key: str | None = None,
        coalesce_key: str | None = None,
        source: str = "python-client",
        metadata: Mapping[str, Any] | None = None,
        request_id: str | None = None,
        priority: int | None = None,
        not_before: datetime | None = None,
    ) -> str:
        """Enqueue a run of `pipeline_name` (or of `template`) and return the request id.

        `priority` 0-9, higher first (None: routine, 0); `not_before`, an aware datetime, holds the run
        until then (recorded `scheduled`).

        Raises only `TriggerError`s: `InvalidRequest` (with paths) for a request that cannot be
        built, `EnqueueError` when Redis does not take it in time.
        """
        return await self.send(
            request_from(
                pipeline_name,
                template=template,
                parameters=parameters,
                steps=steps,
                idempotency_key=idempotency_key,
                coalesce_key=coalesce_key,
                source=source,
                metadata=metadata,
                request_id=request_id,
                priority=priority,
                not_before=not_before,
            )
        )

    async def send(self, request: TriggerRequest) -> str:
        """Enqueue a built request; raise `EnqueueError` if Redis does not take it in time."""
        return await self.enqueue(*queued(request, self.settings))

    async def enqueue(self, state: RequestState, payload: str, task_kwargs: dict[str, Any] | None = None) -> str:
        """Record `state` (unless one exists) and push `payload` for the worker, in one atomic call; with
        `enqueue_min_replicas`, return only once that many replicas have it (`EnqueueNotReplicated` if not)."""
        call = enqueue_call(self.settings, state, payload, task_kwargs)
        try:
            await self._enqueue(keys=call.keys, args=call.args)
            if self.settings.enqueue_min_replicas:
                check_replicated(self.settings, state.request_id, await self.redis.wait(*replica_wait(self.settings)))
        except RedisError as exc:
            raise enqueue_error(self.settings, state.request_id, exc) from None
        return state.request_id

    async def try_send(self, request: TriggerRequest) -> str | None:
        """Fire-and-forget: like `send`, but logs and counts a failure instead of raising, whatever it is."""
        try:
            return await self.send(request)
        except Exception as exc:  # noqa: BLE001 - the caller asked never to be raised at
            self.failed_enqueues += 1
            note_failed_enqueue(request, exc)
            return None

    async def status(self, request_id: str) -> RequestState:
        """The request's current state; `UnknownRequest` if none is recorded."""
        return known_state(request_id, parse_state(await self.redis.get(keys.state_key(request_id))))

    async def wait(self, request_id: str, timeout: float) -> RequestState:
        """Wait up to `timeout` seconds for a terminal state, yielding to the event loop between looks."""
        deadline = time.monotonic() + timeout
        state = await self.status(request_id)
        while not state.status.terminal and (pause := pause_before(deadline, POLL_INTERVAL)) > 0:
            await asyncio.sleep(pause)
            state = await self.status(request_id)
        return state

    async def cancel(
        self, request_id: str, reason: str | None = None, by: str | None = None, *, stopper: RunStopper | None = None
    ) -> RequestState:
        """`TriggerClient.cancel` for asyncio: the same Lua call; stopping a running request's run (ZenML's
        blocking client) happens in a thread."""
        who, run_stop = by or who_cancels(), None
        for _ in range(CANCEL_TRIES):
            read = await self.redis.get(keys.state_key(request_id))
            state = known_state(request_id, parse_state(read))
            if state.status.terminal and run_stop is not None:
                return state  # the stopped run ended the request first
            if state.status is Status.RUNNING and run_stop is None:
                run_stop = await asyncio.to_thread(stop_run, stopper or ZenMLRunStopper(), state)
            ended = cancelled(state, who, reason, run_stop)
            catalog = self._catalog.interpret(*await self.redis.mget(self._catalog.keys)).catalog
            call = cancel_call(self.settings, read or b"", ended, catalog.names() if catalog else ())
            if await self._cancel(keys=call.keys, args=call.args) in (b"ok", "ok"):
                return ended
        raise kept_changing(request_id)

    async def requests(
        self,
        *,
        status: Iterable[str | Status] = (),
        pipeline: str | None = None,
        source: str | None = None,
        since: datetime | timedelta | None = None,
        limit: int = DEFAULT_LIMIT,
    ) -> list[RequestState]:
        """Recorded requests, newest first, filtered as `TriggerClient.requests` filters them."""
        return await list_requests_async(self.redis, RequestQuery.build(status, pipeline, source, since, limit))

    async def aclose(self) -> None:
        """Close the Redis client and the connections of its pool."""
        await self.redis.aclose()

    async def __aenter__(self) -> AsyncTriggerClient:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        await self.aclose()
