"""How the gateway hands a request over: the early check against the catalog, then one enqueue.

The catalog is read again at most every few seconds, not per POST. Every route that enqueues
(`/v1/triggers` and the compatibility routes) goes through `submit`.
"""

from __future__ import annotations

import time

from fastapi import Request
from redis.exceptions import RedisError

from producers.async_client import AsyncTriggerClient
from producers.catalog import CatalogCheck, CatalogRead, CatalogReader
from producers.catalog_validation import check_request
from producers.client import queued
from producers.contract import TriggerRequest
from producers.errors import InvalidRequest
from producers.gateway_auth import Caller
from producers.gateway_bodies import read_body
from producers.signing import sign

REFRESH_S = 5.0
"""How old the gateway's copy of the catalog may get; workers republish it every `TRIGGER_CATALOG_INTERVAL`."""


class GatewayCatalog:
    """The last catalog read, refreshed with one `MGET` when older than `refresh` seconds; never raises."""

    def __init__(self, client: AsyncTriggerClient, refresh: float = REFRESH_S) -> None:
        self.client, self.refresh = client, refresh
        self.reader = CatalogReader(None, client.settings.queue)
        self._read: CatalogRead | None = None
        self._read_at = 0.0

    async def read(self) -> CatalogRead:
        """The catalog (or why there is none usable), at most `refresh` seconds old."""
        if self._read is None or time.monotonic() - self._read_at > self.refresh:
            self._read, self._read_at = await self._fetch(), time.monotonic()
        return self._read

    async def check(self, request: TriggerRequest) -> CatalogCheck:
        """The early check of `request`: problems with the worker's paths, or why it was skipped."""
        return check_request(await self.read(), request)

    async def _fetch(self) -> CatalogRead:
        try:
            raw, changes = await self.client.redis.mget(self.reader.keys)
        except (RedisError, OSError) as exc:
            return CatalogRead(None, f"the catalog could not be read: {type(exc).__name__}")
        return self.reader.interpret(raw, changes)


async def received(request: Request) -> tuple[Caller, bytes]:
    """The body, read no further than the payload limit, and the caller it proves (`Unauthorized` if none)."""
    client: AsyncTriggerClient = request.app.state.triggers
    body = await read_body(request, client.settings.max_payload_bytes)
    return request.app.state.auth.authenticate(request.headers, body), body


async def submit(request: Request, caller: Caller, trigger: TriggerRequest) -> CatalogCheck:
    """Check the caller's scope (`Forbidden`), then the catalog (`InvalidRequest` with every problem), then
    enqueue, signed with the caller's key so the worker can check the same scope again."""
    state = request.app.state
    state.auth.authorize(caller, trigger)
    checked = await state.catalog.check(trigger)
    if checked.problems:
        raise InvalidRequest(details=checked.problems)
    queued_state, payload = queued(trigger, state.triggers.settings)
    key = caller.signing_key()
    kwargs = {"signature": sign(payload, *key)} if key is not None else None
    await state.triggers.enqueue(queued_state, payload, kwargs)
    return checked


def early_check_note(checked: CatalogCheck) -> str:
    """What the 202 says about the early check: `passed`, or why it was skipped (the worker checks anyway)."""
    return "passed" if checked.skipped is None else f"skipped: {checked.skipped}"
