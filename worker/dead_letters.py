"""The dead-letter store: one bounded place for every request that did not succeed.

Each letter keeps the raw payload, reason, error and attempts; the store is pruned
by age and size on every write (dramatiq's dead-letter queue, with a key per letter).
"""

from __future__ import annotations

import socket
import time
from datetime import datetime

import redis
from pydantic import BaseModel, Field

from producers import keys
from producers.contract import utc_now
from producers.envelope import raw_as_text, raw_from_text
from producers.state import ErrorInfo


class DeadLetter(BaseModel):
    """A request that ended `failed`, `rejected` or `dead_lettered`, with what is needed to replay it."""

    request_id: str
    status: str
    reason: str
    error: ErrorInfo
    attempts: int
    raw_payload: str
    raw_encoding: str = "utf-8"
    pipeline_name: str | None = None
    template: str | None = None
    source: str | None = None
    run_id: str | None = None
    worker: str = Field(default_factory=socket.gethostname)
    created_at: datetime | None = None
    dead_lettered_at: datetime = Field(default_factory=utc_now)
    replayed_as: list[str] = Field(default_factory=list)

    encode_raw = staticmethod(raw_as_text)

    def raw_bytes(self) -> bytes:
        """The payload exactly as it arrived."""
        raw = raw_from_text(self.raw_payload, self.raw_encoding)
        return raw if isinstance(raw, bytes) else raw.encode()


class DeadLetterStore:
    """Dead letters in Redis: a key per letter plus an index scored by dead-letter time."""

    def __init__(self, client: redis.Redis, max_size: int, max_age: int) -> None:
        self.client = client
        self.max_size = max_size
        self.max_age = max_age

    def add(self, letter: DeadLetter) -> None:
        """Store a letter, then prune what is too old or over the size bound."""
        now = time.time()
        pipe = self.client.pipeline(transaction=True)
        pipe.set(keys.dead_letter_key(letter.request_id), letter.model_dump_json(), ex=self.max_age)
        pipe.zadd(keys.DEAD_LETTERS_KEY, {letter.request_id: now})
        pipe.execute()
        self.prune(now)

    def save(self, letter: DeadLetter) -> None:
        """Rewrite a letter in place (after a replay), keeping its index position."""
        ttl = self.client.ttl(keys.dead_letter_key(letter.request_id))
        self.client.set(keys.dead_letter_key(letter.request_id), letter.model_dump_json(), ex=max(ttl, 1))

    def prune(self, now: float | None = None) -> int:
        """Drop letters older than `max_age` and the oldest beyond `max_size`; return how many."""
        now = time.time() if now is None else now
        old = self.client.zrangebyscore(keys.DEAD_LETTERS_KEY, "-inf", now - self.max_age)
        overflow = self.client.zcard(keys.DEAD_LETTERS_KEY) - len(old) - self.max_size
        if overflow > 0:
            old += self.client.zrange(keys.DEAD_LETTERS_KEY, len(old), len(old) + overflow - 1)
        return self._delete([member.decode() for member in old])

    def get(self, request_id: str) -> DeadLetter | None:
        """One letter by request id."""
        raw = self.client.get(keys.dead_letter_key(request_id))
        return DeadLetter.model_validate_json(raw) if raw else None

    def list(self, limit: int = 100) -> list[DeadLetter]:
        """Newest letters first."""
        ids = [m.decode() for m in self.client.zrevrange(keys.DEAD_LETTERS_KEY, 0, limit - 1)]
        letters = [self.get(request_id) for request_id in ids]
        return [letter for letter in letters if letter is not None]

    def count(self) -> int:
        """How many letters are held."""
        return int(self.client.zcard(keys.DEAD_LETTERS_KEY))

    def purge(self, older_than: float | None = None) -> int:
        """Delete letters dead-lettered more than `older_than` seconds ago (all when None)."""
        ceiling = "+inf" if older_than is None else time.time() - older_than
        ids = [m.decode() for m in self.client.zrangebyscore(keys.DEAD_LETTERS_KEY, "-inf", ceiling)]
        return self._delete(ids)

    def _delete(self, ids: list[str]) -> int:
        if not ids:
            return 0
        pipe = self.client.pipeline(transaction=True)
        pipe.delete(*[keys.dead_letter_key(i) for i in ids])
        pipe.zrem(keys.DEAD_LETTERS_KEY, *ids)
        pipe.execute()
        return len(ids)
