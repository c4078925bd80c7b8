"""The dead-letter store: one bounded place for every request that did not succeed.

Each letter keeps the payload, reason, error and attempts. Every letter is bounded on the
way in (a huge payload keeps a prefix plus its size and SHA-256; long texts are clipped), and
the store is bounded by age, count and total bytes. Adding and trimming to the count and byte
bounds run as one Lua script, so concurrent writers during a rejection storm never delete letters
that are within bounds; pruning by age is the worker's periodic chore, off the write path.
"""

from __future__ import annotations

import hashlib
import socket
import time
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

import redis
from pydantic import BaseModel, Field

from producers import keys
from producers.contract import utc_now
from producers.envelope import raw_as_text, raw_from_text
from producers.state import ErrorInfo, storable_text

if TYPE_CHECKING:
    from worker.settings import WorkerSettings

DEFAULT_MAX_BYTES = 256 * 1024 * 1024
DEFAULT_MAX_PAYLOAD_BYTES = 64 * 1024
DEFAULT_PAYLOAD_PREFIX = 4096
MAX_TEXT_CHARS = 1000
"""Longest reason, error message or label kept; a 1 MB task name must not be stored four times."""
MAX_DETAILS = 20
MAX_DETAIL_CHARS = 500
LABELS = ("status", "pipeline_name", "template", "source", "run_id", "worker")
"""Short text fields that come from the message; clipped like the reason, since garbage can set them."""


def clip(text: str, limit: int = MAX_TEXT_CHARS) -> str:
    """`text` JSON-safe and cut to a letter's `limit` (`storable_text` with the letter's bound)."""
    return storable_text(text, limit)


def bounded_error(error: ErrorInfo) -> ErrorInfo:
    """`error` with its message, its details and their number clipped."""
    kept = error.details[:MAX_DETAILS]
    details = [{clip(k, MAX_DETAIL_CHARS): clip(v, MAX_DETAIL_CHARS) for k, v in d.items()} for d in kept]
    if len(error.details) > MAX_DETAILS:
        details.append({"path": "", "problem": f"... {len(error.details) - MAX_DETAILS} more"})
    return ErrorInfo(type=clip(error.type, MAX_DETAIL_CHARS), message=clip(error.message), details=details)


@dataclass(frozen=True)
class BoundedPayload:
    """A payload as a letter keeps it: whole within the limit, else a prefix; always its size and digest."""

    text: str
    encoding: str
    size: int
    sha256: str
    truncated: bool

    def fields(self) -> dict[str, Any]:
        """The `DeadLetter` fields this fills."""
        return {
            "raw_payload": self.text,
            "raw_encoding": self.encoding,
            "payload_size": self.size,
            "payload_sha256": self.sha256,
            "payload_truncated": self.truncated,
        }


def bounded_payload(raw: bytes | str, limit: int, prefix: int) -> BoundedPayload:
    """`raw` whole when at most `limit` bytes, else its first `prefix` bytes.

    A str is encoded once and bytes are not copied (only the kept prefix is), so a 10 MB
    payload costs one pass for its size and SHA-256.
    """
    data = _payload_bytes(raw)
    digest = hashlib.sha256(data).hexdigest()
    if len(data) <= limit:
        return BoundedPayload(*raw_as_text(data), len(data), digest, truncated=False)
    return BoundedPayload(*_prefix_as_text(data[:prefix]), len(data), digest, truncated=True)


def cut_payload(head: bytes | str, size: int, sha256: str, prefix: int) -> BoundedPayload:
    """A payload cut upstream (the transport passes on only a prefix of an oversized item): at most
    `prefix` bytes of `head`, recorded with the whole item's `size` and `sha256`."""
    return BoundedPayload(*_prefix_as_text(_payload_bytes(head)[:prefix]), size, sha256, truncated=True)


def _payload_bytes(raw: bytes | str) -> bytes:
    """The payload's bytes; a str with lone surrogates (no valid UTF-8) keeps them and ends up base64."""
    return raw if isinstance(raw, bytes) else raw.encode("utf-8", "surrogatepass")


def _prefix_as_text(head: bytes) -> tuple[str, str]:
    """A cut UTF-8 text stays readable text: a character split by the cut is dropped, not base64'd."""
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as exc:
        if exc.reason == "unexpected end of data":
            head = head[: exc.start]
    return raw_as_text(head)


class DeadLetter(BaseModel):
    """A request that ended `failed`, `rejected` or `dead_lettered`, with what is needed to replay it."""

    request_id: str
    status: str
    reason: str
    error: ErrorInfo
    attempts: int
    raw_payload: str
    raw_encoding: str = "utf-8"
    payload_size: int | None = None
    payload_sha256: str | None = None
    payload_truncated: bool = False
    pipeline_name: str | None = None
    template: str | None = None
    source: str | None = None
    run_id: str | None = None
    worker: str = Field(default_factory=socket.gethostname)
    created_at: datetime | None = None
    dead_lettered_at: datetime = Field(default_factory=utc_now)
    replay_of: str | None = None
    replayed_as: list[str] = Field(default_factory=list)

    encode_raw = staticmethod(raw_as_text)

    def raw_bytes(self) -> bytes:
        """The payload exactly as it arrived (only its first bytes when `payload_truncated`)."""
        raw = raw_from_text(self.raw_payload, self.raw_encoding)
        return _payload_bytes(raw)

    @property
    def replayable(self) -> bool:
        """False when only a prefix of the payload was kept."""
        return not self.payload_truncated

    def bounded(self, max_payload_bytes: int, payload_prefix: int) -> DeadLetter:
        """A copy within the store's bounds: payload as `bounded_payload` keeps it, texts clipped."""
        texts = {name: clip(value) for name in LABELS if isinstance(value := getattr(self, name), str)}
        payload = self._bounded_payload_fields(max_payload_bytes, payload_prefix)
        return self.model_copy(
            update={**payload, **texts, "reason": clip(self.reason), "error": bounded_error(self.error)}
        )

    def _bounded_payload_fields(self, limit: int, prefix: int) -> dict[str, Any]:
        raw = self._raw()
        if not self.payload_truncated:
            return bounded_payload(raw, limit, prefix).fields()
        kept = bounded_payload(raw, prefix, prefix)  # already a prefix: keep the original size and digest
        return {"raw_payload": kept.text, "raw_encoding": kept.encoding}

    def _raw(self) -> bytes | str:
        """The payload; text claimed to be base64 that is not stays text, so a bad letter is still stored."""
        try:
            return raw_from_text(self.raw_payload, self.raw_encoding)
        except ValueError:
            return self.raw_payload


# The scripts derive each letter's key from its id (prefix .. id) rather than declaring it in
# KEYS: the store lives on one Redis (the broker), never on a cluster.
_DROP = """
local index, sizes, total, replays = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local prefix = ARGV[1]

local function drop(ids)
  for _, id in ipairs(ids) do
    local size = tonumber(redis.call('HGET', sizes, id) or '0')
    redis.call('DEL', prefix .. id)
    redis.call('ZREM', index, id)
    redis.call('HDEL', sizes, id)
    redis.call('HDEL', replays, id)
    redis.call('DECRBY', total, size)
  end
  return #ids
end

local function trim(max_size, max_bytes)
  local pruned = 0
  local over = redis.call('ZCARD', index) - max_size
  if over > 0 then pruned = drop(redis.call('ZRANGE', index, 0, over - 1)) end
  while tonumber(redis.call('GET', total) or '0') > max_bytes do
    local oldest = redis.call('ZRANGE', index, 0, 0)
    if #oldest == 0 then redis.call('DEL', total) break end
    pruned = pruned + drop(oldest)
  end
  return pruned
end

local function prune(now, max_age, max_size, max_bytes)
  local cutoff = string.format('%.6f', now - max_age)
  return drop(redis.call('ZRANGEBYSCORE', index, '-inf', cutoff)) + trim(max_size, max_bytes)
end
"""
"""Delete letters with their size, replay links and share of the byte total; `trim` to the count and byte
bounds (two O(1) reads while within them), `prune` by age as well."""

ADD_LETTER = (
    _DROP
    + """
local function add_letter(id, record, now, max_age, max_size, max_bytes)
  local previous = tonumber(redis.call('HGET', sizes, id) or '0')
  redis.call('SET', prefix .. id, record, 'EX', max_age)
  redis.call('ZADD', index, now, id)
  redis.call('HSET', sizes, id, #record)
  redis.call('INCRBY', total, #record - previous)
  return trim(tonumber(max_size), tonumber(max_bytes))
end
"""
)
"""`add_letter(...)` over KEYS[1..4] (`LETTER_KEYS`) with the letter key prefix in ARGV[1]; other scripts
(the outcome record) build on it, so a letter is written in the same atomic step as its state. Adding
keeps the count and byte bounds at once; age is pruned by the worker's periodic chores (`prune`), and
a letter's own record expires at its age anyway."""

_ADD = ADD_LETTER + "return add_letter(ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7])"
"""ARGV: prefix, id, record, now, max_age, max_size, max_bytes. Returns how many letters were pruned."""

_PRUNE = _DROP + "return prune(tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5]))"
"""ARGV: prefix, now, max_age, max_size, max_bytes."""

_PURGE = _DROP + "return drop(redis.call('ZRANGEBYSCORE', index, '-inf', ARGV[2]))"
"""ARGV: prefix, highest dead-letter time to delete ('+inf' for all)."""

_LINK = """
if redis.call('EXISTS', KEYS[2]) == 0 then return 0 end
local current = redis.call('HGET', KEYS[1], ARGV[1])
if current and ARGV[3] == '1' then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], current and (current .. ',' .. ARGV[2]) or ARGV[2])
return 1
"""
"""Append ARGV[2] to ARGV[1]'s replays if its letter KEYS[2] is stored (and, with ARGV[3] = '1', has none)."""

_UNLINK = """
local current = redis.call('HGET', KEYS[1], ARGV[1])
if not current then return 0 end
local kept = {}
for id in string.gmatch(current, '[^,]+') do
  if id ~= ARGV[2] then table.insert(kept, id) end
end
if #kept == 0 then return redis.call('HDEL', KEYS[1], ARGV[1]) end
redis.call('HSET', KEYS[1], ARGV[1], table.concat(kept, ','))
return 1
"""
"""Take ARGV[2] back out of ARGV[1]'s replays (its enqueue failed)."""

LETTER_KEYS = [
    keys.DEAD_LETTERS_KEY,
    keys.DEAD_LETTER_SIZES_KEY,
    keys.DEAD_LETTER_BYTES_KEY,
    keys.DEAD_LETTER_REPLAYS_KEY,
]
LETTER_PREFIX = keys.dead_letter_key("")


class DeadLetterStore:
    """Dead letters in Redis: a key per letter, an index scored by dead-letter time, sizes and a byte total.

    A letter's record is written once; the ids it was replayed as live in a hash beside it,
    appended atomically, so concurrent replays never lose one.
    """

    def __init__(
        self,
        client: redis.Redis,
        max_size: int,
        max_age: int,
        *,
        max_bytes: int = DEFAULT_MAX_BYTES,
        max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES,
        payload_prefix: int = DEFAULT_PAYLOAD_PREFIX,
    ) -> None:
        self.client = client
        self.max_size = max_size
        self.max_age = max_age
        self.max_bytes = max_bytes
        self.max_payload_bytes = max_payload_bytes
        self.payload_prefix = payload_prefix
        self._add = client.register_script(_ADD)
        self._prune = client.register_script(_PRUNE)
        self._purge = client.register_script(_PURGE)
        self._link = client.register_script(_LINK)
        self._unlink = client.register_script(_UNLINK)

    @classmethod
    def from_settings(cls, client: redis.Redis, settings: WorkerSettings) -> DeadLetterStore:
        """The store with every bound the settings give (the worker and the `dlq` commands share it)."""
        return cls(
            client,
            settings.dead_letter_max_size,
            settings.dead_letter_max_age,
            max_bytes=settings.dead_letter_max_bytes,
            max_payload_bytes=settings.max_payload_bytes,
            payload_prefix=settings.dead_letter_payload_prefix,
        )

    def add(self, letter: DeadLetter) -> int:
        """Store `letter` within the count and byte bounds, trimming what is over them in the same atomic
        step; return how many were dropped. Letters past their age go in `prune`."""
        return int(self._add(keys=LETTER_KEYS, args=[LETTER_PREFIX, *self.letter_args(letter)]))

    def letter_args(self, letter: DeadLetter) -> list[Any]:
        """`add_letter`'s arguments for `letter`, bounded: id, record, now, max_age, max_size, max_bytes."""
        bounded = letter.bounded(self.max_payload_bytes, self.payload_prefix)
        record = bounded.model_dump_json(exclude={"replayed_as"}, exclude_none=True)
        return [bounded.request_id, record, time.time(), *self._bounds()]

    def prune(self, now: float | None = None) -> int:
        """Drop letters older than `max_age`, then the oldest beyond `max_size` or `max_bytes`; return how many."""
        now = time.time() if now is None else now
        return int(self._prune(keys=LETTER_KEYS, args=[LETTER_PREFIX, now, *self._bounds()]))

    def _bounds(self) -> list[int]:
        return [self.max_age, self.max_size, self.max_bytes]

    def link(self, request_id: str, new_id: str, first_only: bool = False) -> bool:
        """Record that `request_id` was replayed as `new_id`; False if its letter is gone (or, with
        `first_only`, was replayed already), which makes this the claim concurrent replays race for."""
        args = [request_id, new_id, "1" if first_only else "0"]
        return bool(self._link(keys=[keys.DEAD_LETTER_REPLAYS_KEY, keys.dead_letter_key(request_id)], args=args))

    def unlink(self, request_id: str, new_id: str) -> None:
        """Undo `link` (the replay could not be enqueued)."""
        self._unlink(keys=[keys.DEAD_LETTER_REPLAYS_KEY], args=[request_id, new_id])

    def get(self, request_id: str) -> DeadLetter | None:
        """One letter by request id."""
        return next(iter(self._load([request_id])), None)

    def list(self, limit: int = 100) -> list[DeadLetter]:
        """Newest letters first."""
        return self._load([m.decode() for m in self.client.zrevrange(keys.DEAD_LETTERS_KEY, 0, limit - 1)])

    def _load(self, ids: list[str]) -> list[DeadLetter]:
        """Records and replay links of `ids` in one round trip; expired records are left out."""
        if not ids:
            return []
        pipe = self.client.pipeline(transaction=False)
        pipe.mget([keys.dead_letter_key(i) for i in ids])
        pipe.hmget(keys.DEAD_LETTER_REPLAYS_KEY, ids)
        records, links = pipe.execute()
        return [_parse(record, link) for record, link in zip(records, links, strict=True) if record]

    def count(self) -> int:
        """How many letters are held."""
        return int(self.client.zcard(keys.DEAD_LETTERS_KEY))

    def total_bytes(self) -> int:
        """Bytes of the stored records, as counted against `max_bytes`."""
        return int(self.client.get(keys.DEAD_LETTER_BYTES_KEY) or 0)

    def purge(self, older_than: float | None = None) -> int:
        """Delete letters dead-lettered more than `older_than` seconds ago (all when None)."""
        ceiling = "+inf" if older_than is None else time.time() - older_than
        return int(self._purge(keys=LETTER_KEYS, args=[LETTER_PREFIX, ceiling]))


def _parse(record: bytes, link: bytes | None) -> DeadLetter:
    """A stored record with its replay links (records written before the links hash keep their own)."""
    letter = DeadLetter.model_validate_json(record)
    if link:
        letter.replayed_as = list(dict.fromkeys([*letter.replayed_as, *link.decode().split(",")]))
    return letter
