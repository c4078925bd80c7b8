"""How the gateway hands a request over: whose it is, may they, is it valid, then one signed enqueue.

The catalog is read again at most every few seconds, not per POST. Every route that enqueues
(`/v1/triggers` and the compatibility routes) goes through `received` and `submit`.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from typing import Any

from fastapi import Request
from redis.exceptions import RedisError

from producers import keys
from producers.async_client import AsyncTriggerClient
from producers.catalog import CatalogCheck, CatalogRead, CatalogReader
from producers.catalog_validation import check_request
from producers.client import queued
from producers.contract import TriggerRequest, build_request
from producers.errors import InvalidRequest, Problem, Unauthorized
from producers.gateway_auth import SIGNATURE_HEADER, TOLERANCE_S, Caller
from producers.gateway_bodies import read_body
from producers.signing import sign

IDEMPOTENCY_HEADER = "Idempotency-Key"
IDEMPOTENT_PREFIX = "idem-"
"""Request ids the gateway derives from an `Idempotency-Key` header (per caller), so a retried POST maps to one id."""
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
    """The body, read no further than the payload limit, and the caller it proves (`Unauthorized` if none).

    A webhook signature is good once: it is remembered for twice its time window, so a captured
    request sent again is refused, whatever headers or route it is sent with.
    """
    client: AsyncTriggerClient = request.app.state.triggers
    body = await read_body(request, client.settings.max_payload_bytes)
    caller = request.app.state.auth.authenticate(request.headers, body)
    if caller.signature is not None and not await first_use(client, caller.signature):
        raise Unauthorized(details=[Problem(SIGNATURE_HEADER, "was used already; sign each delivery anew")])
    return caller, body


async def first_use(client: AsyncTriggerClient, signature: str) -> bool:
    """Remember `signature` (by digest) for twice the tolerance; False when it was seen before."""
    digest = hashlib.sha256(signature.encode("utf-8", "surrogatepass")).hexdigest()
    return bool(await client.redis.set(keys.webhook_signature_key(digest), 1, nx=True, ex=2 * TOLERANCE_S))


@dataclass(frozen=True)
class Submitted:
    """What a route answers about: the request as queued, and the early check (None for a replayed POST)."""

    trigger: TriggerRequest
    checked: CatalogCheck | None
    status: str = "queued"
    """The state it was recorded in: `queued`, or `scheduled` for a future `not_before`."""

    @property
    def replayed(self) -> bool:
        return self.checked is None


async def submit(request: Request, caller: Caller, trigger: TriggerRequest) -> Submitted:
    """Make the request the caller's own (ids and keys), check its scope (`Forbidden`) and the catalog
    (`InvalidRequest` with every problem), then enqueue it signed with the caller's key, so the worker can
    check the same scope again. A retried POST with the same `Idempotency-Key` queues nothing."""
    state = request.app.state
    header = request.headers.get(IDEMPOTENCY_HEADER)
    trigger = owned(trigger, header, caller.id)
    state.auth.authorize(caller, trigger)
    if header is not None and await known(state.triggers, trigger.request_id):
        return Submitted(trigger, None)
    checked = await state.catalog.check(trigger)
    if checked.problems:
        raise InvalidRequest(details=checked.problems)
    queued_state, payload = queued(trigger, state.triggers.settings)
    key = caller.signing_key()
    kwargs = {"signature": sign(payload, *key)} if key is not None else None
    await state.triggers.enqueue(queued_state, payload, kwargs)
    return Submitted(trigger, checked, queued_state.status.value)


def owned(trigger: TriggerRequest, header: str | None, caller: str) -> TriggerRequest:
    """The request as the gateway queues it for `caller`.

    Request ids are the gateway's to choose: a caller naming one could take over or pre-empt another's
    request. Idempotency keys are scoped per caller (`<caller>:<key>`), so two callers' keys never
    collide. An `Idempotency-Key` header becomes the key and fixes the request id, so a retried POST
    gets the first request's id back (Stripe's semantics) instead of a second request.
    """
    if "request_id" in trigger.model_fields_set:
        why = "is chosen by the gateway; send an Idempotency-Key header to make retries safe"
        raise InvalidRequest(details=[Problem("request_id", why)])
    if header is not None and trigger.idempotency_key not in (None, header):
        problem = "differs from the Idempotency-Key header; send one or make them equal"
        raise InvalidRequest(details=[Problem("idempotency_key", problem)])
    key = header if header is not None else trigger.idempotency_key
    if key is None:
        return trigger
    fields: dict[str, Any] = {"idempotency_key": f"{caller}:{key}"}
    if header is not None:
        digest = hashlib.sha256(f"{caller}\0{header}".encode("utf-8", "surrogatepass")).hexdigest()[:40]
        fields["request_id"] = f"{IDEMPOTENT_PREFIX}{digest}"
    return build_request(**{**dict(trigger), **fields})


async def known(client: AsyncTriggerClient, request_id: str) -> bool:
    """Whether a state is recorded under `request_id` (a retried idempotent POST); GET, which a producer's
    ACL user may run, rather than EXISTS."""
    return await client.redis.get(keys.state_key(request_id)) is not None


def early_check_note(checked: CatalogCheck | None) -> str:
    """What the 202 says about the early check: `passed`, or why it was skipped (the worker checks anyway)."""
    if checked is None:
        return "skipped: a retried POST; the first one was checked"
    return "passed" if checked.skipped is None else f"skipped: {checked.skipped}"
