"""kombu's Redis transport, made safe for anything pushed onto the queue.

Stock kombu pops an item, then parses it: raw garbage raises after the pop and is
lost. Here every popped item that is not a well-formed trigger task message is
wrapped into one that carries the raw text and the reason, so the worker records
it as `rejected` and dead-letters it like any other invalid request.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import uuid
from bisect import bisect
from collections.abc import Callable
from typing import Any

from kombu.transport import redis as kombu_redis
from kombu.utils.encoding import bytes_to_str
from kombu.utils.json import loads as kombu_loads

from producers import keys
from producers.envelope import CONTENT_TYPE, raw_as_text, task_envelope
from producers.priority import message_priority
from producers.signing import SIGNATURE_SHAPE

TASK_KWARGS = frozenset({"attempt", "quarantine", "raw_encoding", "raw_size", "raw_sha256", "signature"})
"""Keyword arguments the trigger task takes; anything else would fail inside Celery, unrecorded."""


_ID = re.compile(r"[A-Za-z0-9_.:-]{1,128}")
_DIGEST = re.compile(r"(?:[0-9a-f]{64})?")
"""A task id the worker may record state under: the request id's own character set and length."""


class EnvelopeError(ValueError):
    """Why a popped item is not a task message this worker can run."""


def parse_envelope(message: Any) -> tuple[str, str, dict[str, Any]]:
    """(task id, request text, task kwargs) of a well-formed trigger task message, or `EnvelopeError`."""
    if not isinstance(message, dict):
        raise EnvelopeError(f"message is a JSON {type(message).__name__}, not a Celery task envelope")
    headers, properties = message.get("headers"), message.get("properties")
    if not isinstance(headers, dict) or not isinstance(properties, dict):
        raise EnvelopeError("message has no 'headers'/'properties' objects; not a Celery task envelope")
    if message.get("content-type") != CONTENT_TYPE:
        raise EnvelopeError(f"content type {message.get('content-type')!r} is not accepted (JSON only)")
    task_id = headers.get("id")
    if not isinstance(task_id, str) or not _ID.fullmatch(task_id):
        raise EnvelopeError("message headers lack a task 'id' of 1-128 letters, digits and '_.:-'")
    if headers.get("task") != keys.TASK_NAME:
        raise EnvelopeError(f"unknown task {_short(headers.get('task'))}; this queue only takes {keys.TASK_NAME!r}")
    raw, kwargs = _body(message.get("body"), properties.get("body_encoding"))
    return task_id, raw, kwargs


def _short(value: Any, limit: int = 80) -> str:
    """A bounded repr for error messages, so a 1 MB task name does not become a 1 MB reason."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def envelope_problem(message: Any) -> str | None:
    """Why `message` is not a task message this worker can run, or None."""
    try:
        parse_envelope(message)
    except EnvelopeError as exc:
        return str(exc)
    return None


def _body(body: Any, encoding: Any) -> tuple[str, dict[str, Any]]:
    if not isinstance(body, str):
        raise EnvelopeError("message body is not a string")
    try:
        raw = base64.b64decode(body, validate=True) if encoding == "base64" else body.encode()
        args, kwargs, embed = json.loads(raw)
    except (ValueError, TypeError, RecursionError):
        raise EnvelopeError("message body is not a JSON [args, kwargs, embed] triple") from None
    if not (isinstance(args, list) and len(args) == 1 and isinstance(args[0], str)):
        raise EnvelopeError("task arguments must be exactly one request string")
    if not isinstance(kwargs, dict) or not isinstance(embed, dict):
        raise EnvelopeError("task kwargs and embed must be JSON objects")
    _check_kwargs(kwargs)
    return args[0], kwargs


def _check_kwargs(kwargs: dict[str, Any]) -> None:
    unexpected = sorted(set(kwargs) - TASK_KWARGS)
    if unexpected:
        raise EnvelopeError(f"unexpected task keyword arguments {unexpected}; allowed: {sorted(TASK_KWARGS)}")
    attempt = kwargs.get("attempt")
    if attempt is not None and (not isinstance(attempt, int) or isinstance(attempt, bool) or attempt < 1):
        raise EnvelopeError("task keyword 'attempt' must be a positive integer")
    if kwargs.get("raw_encoding", "utf-8") not in ("utf-8", "base64"):
        raise EnvelopeError("task keyword 'raw_encoding' must be 'utf-8' or 'base64'")
    if not isinstance(kwargs.get("quarantine", ""), str):
        raise EnvelopeError("task keyword 'quarantine' must be a string")
    _check_signature(kwargs.get("signature"))
    size, digest = kwargs.get("raw_size", 0), kwargs.get("raw_sha256", "")
    if not isinstance(digest, str):
        raise EnvelopeError("task keyword 'raw_sha256' must be a SHA-256 hex digest")
    if not isinstance(size, int) or isinstance(size, bool) or not 0 <= size < 2**63 or not _DIGEST.fullmatch(digest):
        raise EnvelopeError("task keywords 'raw_size' and 'raw_sha256' must be a count and a SHA-256 hex digest")


def _check_signature(signature: Any) -> None:
    """Only the shape: whether it verifies is the worker's `Authorization` to say, after decoding."""
    if signature is not None and not (isinstance(signature, str) and SIGNATURE_SHAPE.fullmatch(signature)):
        raise EnvelopeError("task keyword 'signature' must look like k=<key id>,t=<unix seconds>,v1=<64 hex digits>")


def quarantine(item: bytes, queue: str, reason: str, **extra: Any) -> dict[str, Any]:
    """A well-formed task message that carries an unreadable item to the worker for rejection."""
    text, encoding = raw_as_text(item)
    kwargs = {"quarantine": reason, "raw_encoding": encoding, **extra}
    return json.loads(task_envelope(keys.TASK_NAME, f"quarantine-{uuid.uuid4().hex}", [text], queue, kwargs))


def quarantine_oversized(item: bytes, queue: str, limit: int, keep: int = 4096) -> dict[str, Any]:
    """An oversized item travels on as its first `keep` bytes, its size and its SHA-256, never whole."""
    reason = f"message is {len(item)} bytes, over the {limit}-byte limit; its first {keep} bytes are kept"
    digest = hashlib.sha256(item).hexdigest()
    return quarantine(item[:keep], queue, reason, raw_size=len(item), raw_sha256=digest)


MAX_MESSAGE_BYTES = 256 * 1024
"""Default cap on one popped item; over it, the item is not parsed or copied, only fingerprinted."""


Arrival = Callable[[str, str, dict[str, Any]], bool]
"""`(task id, request text, task kwargs) -> True` when the worker settled the message as it arrived."""


def safe_loads(item: bytes | str, queue: str, max_bytes: int = MAX_MESSAGE_BYTES) -> dict[str, Any]:
    """Parse a popped item; never raise, never drop it."""
    return load_item(item, queue, max_bytes)[0]


def load_item(
    item: bytes | str, queue: str, max_bytes: int = MAX_MESSAGE_BYTES
) -> tuple[dict[str, Any], tuple[str, str, dict[str, Any]] | None]:
    """The task message for a popped item, and its checked (task id, request text, kwargs) unless quarantined."""
    data = item if isinstance(item, bytes) else item.encode("utf-8", "surrogatepass")
    if len(data) > max_bytes:
        return quarantine_oversized(data, queue, max_bytes), None
    try:
        message = json.loads(bytes_to_str(data))
    except (ValueError, UnicodeDecodeError, RecursionError):
        return quarantine(data, queue, "message is not JSON"), None
    try:
        task_id, raw, kwargs = parse_envelope(message)
    except EnvelopeError as exc:
        return quarantine(data, queue, str(exc)), None
    # Rebuilt from what was checked: no header Celery would choke on (eta, expires, timelimit, a
    # delivery tag that is not a string) can reach the consumer and crash or silently drop it. Its
    # priority is kept, so kombu restores an unacknowledged copy onto the list it came from.
    rebuilt = task_envelope(keys.TASK_NAME, task_id, [raw], queue, kwargs, message_priority(message))
    return json.loads(rebuilt), (task_id, raw, kwargs)


class Channel(kombu_redis.Channel):
    """Redis channel whose reads go through `load_item`, and that lets the worker settle a message on arrival.

    `on_arrival` (a transport option) may end a message that needs no task at all, a duplicate or a
    superseded request, in one Redis call, before Celery's per-task machinery; it returns False for
    everything else, which is delivered as usual. A message it settles was popped and never delivered,
    so there is nothing to acknowledge; one lost in between is in the waiting index, and the sweeper
    sends it again.
    """

    max_message_bytes = MAX_MESSAGE_BYTES
    on_arrival: Arrival | None = None
    guarded_queues: tuple[str, ...] | None = None
    """Queues whose items go through `load_item` (None: every queue). The worker names its own trigger
    queue, so Celery's remote-control replies (`<id>.reply.celery.pidbox`, popped like any list) reach
    `celery inspect` as kombu wrote them instead of being quarantined as garbage requests."""
    from_transport_options = (
        *kombu_redis.Channel.from_transport_options,
        "max_message_bytes",
        "on_arrival",
        "guarded_queues",
    )

    def priority(self, n: int) -> int:
        """kombu's step for message priority `n` (the highest step not above it), in whatever order the steps
        are listed: the worker lists them most urgent first (`producers.priority.TRANSPORT_OPTIONS`), since
        kombu pops them in that order, and kombu's own lookup expects them ascending."""
        steps = sorted(self.priority_steps)
        return steps[max(0, bisect(steps, n) - 1)]

    def guards(self, queue: str) -> bool:
        """Whether items popped from `queue` are checked as trigger task messages."""
        return self.guarded_queues is None or queue in self.guarded_queues

    def _brpop_read(self, **options: Any) -> bool:
        try:
            try:
                dest__item = self.client.parse_response(self.client.connection, "BRPOP", **options)
            except self.connection_errors:
                self.client.connection.disconnect()
                raise
            if not dest__item:
                raise kombu_redis.Empty()
            dest, item = dest__item
            dest = bytes_to_str(dest).rsplit(self.sep, 1)[0]
            self._queue_cycle.rotate(dest)
            if not self.guards(dest):
                self.connection._deliver(kombu_loads(bytes_to_str(item)), dest)
                return True
            message, checked = load_item(item, dest, self.max_message_bytes)
            if not self._settled(checked):
                self.connection._deliver(message, dest)
            return True
        finally:
            self._in_poll = None
            flush = getattr(self, "_flush_brpop_reauth", None)
            if flush is not None:
                flush()

    def _get(self, queue: str) -> dict[str, Any]:
        if not self.guards(queue):
            return super()._get(queue)  # type: ignore[no-any-return]
        with self.conn_or_acquire() as client:
            for pri in self.priority_steps:
                item = client.rpop(self._q_for_pri(queue, pri))
                if item:
                    self._maybe_update_queues_expire(client, queue)
                    message, checked = load_item(item, queue, self.max_message_bytes)
                    if self._settled(checked):
                        raise kombu_redis.Empty()
                    return message
            self._maybe_update_queues_expire(client, queue)
            raise kombu_redis.Empty()

    def _settled(self, checked: tuple[str, str, dict[str, Any]] | None) -> bool:
        """Whether `on_arrival` settled the message; never raises, so a message is only ever delivered or settled."""
        if checked is None or self.on_arrival is None:
            return False
        try:
            return self.on_arrival(*checked)
        except Exception:  # noqa: BLE001 - anything unsure is delivered, and the task decides
            return False


class Transport(kombu_redis.Transport):
    """Redis transport using the safe channel (`broker_transport = "worker.transport:Transport"`)."""

    Channel = Channel


class SentinelChannel(Channel, kombu_redis.SentinelChannel):
    """The safe channel on a primary found through Redis Sentinel: our reads, kombu's Sentinel connections."""

    from_transport_options = tuple(
        dict.fromkeys((*Channel.from_transport_options, *kombu_redis.SentinelChannel.from_transport_options))
    )


class SentinelTransport(Transport):
    """The safe transport over Sentinel (`broker_transport = "worker.transport:SentinelTransport"`)."""

    Channel = SentinelChannel
    default_port = kombu_redis.SentinelTransport.default_port
