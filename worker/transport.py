"""kombu's Redis transport, made safe for anything pushed onto the queue.

Stock kombu pops an item, then parses it: raw garbage raises after the pop and is
lost. Here every popped item that is not a well-formed trigger task message is
wrapped into one that carries the raw text and the reason, so the worker records
it as `rejected` and dead-letters it like any other invalid request.
"""

from __future__ import annotations

import base64
import json
import uuid
from typing import Any

from kombu.transport import redis as kombu_redis
from kombu.utils.encoding import bytes_to_str

from producers import keys
from producers.envelope import CONTENT_TYPE, task_envelope

TASK_KWARGS = frozenset({"attempt", "quarantine", "raw_encoding"})
"""Keyword arguments the trigger task takes; anything else would fail inside Celery, unrecorded."""


def envelope_problem(message: Any) -> str | None:
    """Why `message` is not a task message this worker can run, or None."""
    if not isinstance(message, dict):
        return f"message is a JSON {type(message).__name__}, not a Celery task envelope"
    headers, properties = message.get("headers"), message.get("properties")
    if not isinstance(headers, dict) or not isinstance(properties, dict):
        return "message has no 'headers'/'properties' objects; not a Celery task envelope"
    if message.get("content-type") != CONTENT_TYPE:
        return f"content type {message.get('content-type')!r} is not accepted (JSON only)"
    if not isinstance(headers.get("id"), str) or not headers["id"]:
        return "message headers lack a task 'id'"
    if headers.get("task") != keys.TASK_NAME:
        return f"unknown task {headers.get('task')!r}; this queue only takes {keys.TASK_NAME!r}"
    if not isinstance(properties.get("delivery_info"), dict) or "delivery_tag" not in properties:
        return "message properties lack 'delivery_info'/'delivery_tag'"
    return _body_problem(message.get("body"), properties.get("body_encoding"))


def _body_problem(body: Any, encoding: Any) -> str | None:
    if not isinstance(body, str):
        return "message body is not a string"
    try:
        raw = base64.b64decode(body, validate=True) if encoding == "base64" else body.encode()
        args, kwargs, embed = json.loads(raw)
    except (ValueError, TypeError, RecursionError):
        return "message body is not a JSON [args, kwargs, embed] triple"
    if not (isinstance(args, list) and len(args) == 1 and isinstance(args[0], str)):
        return "task arguments must be exactly one request string"
    if not isinstance(kwargs, dict) or not isinstance(embed, dict):
        return "task kwargs and embed must be JSON objects"
    unexpected = sorted(set(kwargs) - TASK_KWARGS)
    if unexpected:
        return f"unexpected task keyword arguments {unexpected}; allowed: {sorted(TASK_KWARGS)}"
    return None


def quarantine(item: bytes, queue: str, reason: str) -> dict[str, Any]:
    """A well-formed task message that carries an unreadable item to the worker for rejection."""
    try:
        text, encoding = item.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        text, encoding = base64.b64encode(item).decode(), "base64"
    kwargs = {"quarantine": reason, "raw_encoding": encoding}
    return json.loads(task_envelope(keys.TASK_NAME, f"quarantine-{uuid.uuid4().hex}", [text], queue, kwargs))


def safe_loads(item: bytes | str, queue: str) -> dict[str, Any]:
    """Parse a popped item; never raise, never drop it."""
    data = item if isinstance(item, bytes) else item.encode()
    try:
        message = json.loads(bytes_to_str(data))
    except (ValueError, UnicodeDecodeError, RecursionError):
        return quarantine(data, queue, "message is not JSON")
    problem = envelope_problem(message)
    return message if problem is None else quarantine(data, queue, problem)


class Channel(kombu_redis.Channel):
    """Redis channel whose reads go through `safe_loads`."""

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
            self.connection._deliver(safe_loads(item, dest), dest)
            return True
        finally:
            self._in_poll = None
            flush = getattr(self, "_flush_brpop_reauth", None)
            if flush is not None:
                flush()

    def _get(self, queue: str) -> dict[str, Any]:
        with self.conn_or_acquire() as client:
            for pri in self.priority_steps:
                item = client.rpop(self._q_for_pri(queue, pri))
                if item:
                    self._maybe_update_queues_expire(client, queue)
                    return safe_loads(item, queue)
            self._maybe_update_queues_expire(client, queue)
            raise kombu_redis.Empty()


class Transport(kombu_redis.Transport):
    """Redis transport using the safe channel (`broker_transport = "worker.transport:Transport"`)."""

    Channel = Channel
