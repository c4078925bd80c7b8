"""The time index of requests: what `trigger requests list` and `TriggerClient.requests` walk, newest first.

A request's first state (the producer's `queued` record, or one the worker makes under an id of its own)
adds the request's id to one sorted set in the very Lua call that writes that state, scored by the Redis
clock (one clock for every producer, so "newest first" holds across machines). The same call prunes a
bounded batch of entries older than the state TTL, so the index stays as small as the states it points
at, and nothing ever runs KEYS or SCAN. Reading walks the set newest first a page at a time, fetches the
page's states with one MGET and keeps those that match; an entry whose state has expired is skipped.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

import redis
import redis.asyncio as aioredis
from pydantic import ValidationError

from producers import keys
from producers.state import RequestState, Status, parse_state

INDEX_REQUEST = """
local function index_request(index_key, request_id, ttl)
  local now = redis.call('TIME')
  local score = tonumber(now[1]) + tonumber(now[2]) / 1000000
  redis.call('ZADD', index_key, score, request_id)
  local old = redis.call('ZRANGEBYSCORE', index_key, '-inf', '(' .. (score - tonumber(ttl)), 'LIMIT', 0, 100)
  if #old > 0 then redis.call('ZREM', index_key, unpack(old)) end
end
"""
"""Lua defining `index_request(index key, request id, state TTL)` for the scripts that write a first state:
at most 100 stale entries go per call, more than one call adds, so the index keeps up with any load."""

PAGE = 200
"""Index entries read (and states fetched) per round trip of a walk."""

DEFAULT_LIMIT = 50


def status_named(name: str | Status) -> Status:
    """The `Status` called `name`; a `ValueError` listing the valid ones when there is none."""
    try:
        return Status(name)
    except ValueError:
        valid = ", ".join(status.value for status in Status)
        raise ValueError(f"unknown status {name!r}; valid statuses: {valid}") from None


def as_epoch(moment: datetime | timedelta, now: datetime) -> float:
    """A `since` bound in epoch seconds: a time (naive means UTC), or a duration back from `now`."""
    if isinstance(moment, timedelta):
        return (now - moment).timestamp()
    return (moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)).timestamp()


@dataclass(frozen=True)
class RequestQuery:
    """Which requests a listing shows: any of `statuses` (all when empty), a pipeline (by name or template),
    a source, those indexed at or after `since` (epoch seconds), at most `limit` of them, newest first."""

    statuses: frozenset[Status] = frozenset()
    pipeline: str | None = None
    source: str | None = None
    since: float | None = None
    limit: int = DEFAULT_LIMIT

    @classmethod
    def build(
        cls,
        status: Iterable[str | Status] = (),
        pipeline: str | None = None,
        source: str | None = None,
        since: datetime | timedelta | None = None,
        limit: int = DEFAULT_LIMIT,
    ) -> RequestQuery:
        """A checked query from caller's values; `ValueError` naming the one that is wrong."""
        if limit < 1:
            raise ValueError(f"limit must be at least 1, not {limit}")
        bound = None if since is None else as_epoch(since, datetime.now(timezone.utc))
        names = [status] if isinstance(status, (str, Status)) else status  # one status given alone
        return cls(frozenset(status_named(s) for s in names), pipeline, source, bound, limit)

    def matches(self, state: RequestState) -> bool:
        """Whether `state` passes every filter of the query."""
        return (
            (not self.statuses or state.status in self.statuses)
            and (self.pipeline is None or self.pipeline in (state.pipeline_name, state.template))
            and (self.source is None or state.source == self.source)
        )

    @property
    def lowest_score(self) -> float | str:
        """Where the walk stops: the `since` bound, or the oldest entry."""
        return "-inf" if self.since is None else self.since


@dataclass
class Walk:
    """One walk of the index: where it is, and the states kept so far (each request once, newest first)."""

    query: RequestQuery
    offset: int = 0
    ended: bool = False
    kept: dict[str, RequestState] = field(default_factory=dict)

    @property
    def done(self) -> bool:
        """Nothing more to read: the index ran out, or the limit is reached."""
        return self.ended or len(self.kept) >= self.query.limit

    def take(self, ids: list[bytes], raws: list[bytes | None]) -> None:
        """Keep the matching states of one page (`raws` fetched for `ids`); a short page ends the walk."""
        self.offset += len(ids)
        self.ended = len(ids) < PAGE
        for raw in raws:
            state = _readable(raw)
            if state is not None and state.request_id not in self.kept and self.query.matches(state):
                self.kept[state.request_id] = state

    def states(self) -> list[RequestState]:
        """What the walk found, at most the query's limit."""
        return list(self.kept.values())[: self.query.limit]


def _readable(raw: bytes | None) -> RequestState | None:
    """The state, or None when it expired or cannot be read (a record of a newer version, say)."""
    try:
        return parse_state(raw)
    except ValidationError:
        return None


def _page_args(walk: Walk) -> tuple[str, str, float | str, int, int]:
    return keys.REQUESTS_INDEX_KEY, "+inf", walk.query.lowest_score, walk.offset, PAGE


def _state_keys(ids: list[bytes]) -> list[str]:
    return [keys.state_key(i.decode()) for i in ids]


def list_requests(client: redis.Redis, query: RequestQuery) -> list[RequestState]:
    """The requests `query` selects, newest first: two round trips per page of the index."""
    walk = Walk(query)
    while not walk.done:
        ids = client.zrevrangebyscore(*_page_args(walk))
        walk.take(ids, client.mget(_state_keys(ids)) if ids else [])
    return walk.states()


async def list_requests_async(client: aioredis.Redis, query: RequestQuery) -> list[RequestState]:
    """`list_requests` for the asyncio client."""
    walk = Walk(query)
    while not walk.done:
        ids = await client.zrevrangebyscore(*_page_args(walk))
        walk.take(ids, await client.mget(_state_keys(ids)) if ids else [])
    return walk.states()
