"""Celery's task message protocol 2, as kombu's Redis transport stores it.

Building the envelope here lets a web app enqueue with one Redis round trip and
without installing Celery. `worker.transport` checks the same shape on the way in.
The JSON is assembled from cached constant parts, since a generic `json.dumps` of the
whole envelope costs more than the Redis call it precedes.
"""

from __future__ import annotations

import base64
import json
import os
import socket
from functools import lru_cache
from typing import Any

from producers.priority import kombu_step

CONTENT_TYPE = "application/json"
EMBED = {"callbacks": None, "errbacks": None, "chain": None, "chord": None}
ORIGIN = f"producer@{socket.gethostname()}"
_COMPACT = (",", ":")


def task_envelope(
    task_name: str,
    task_id: str,
    args: list[Any],
    queue: str,
    kwargs: dict[str, Any] | None = None,
    priority: int | None = None,
) -> str:
    """The JSON text kombu's Redis transport expects on the list of `queue` for wire `priority`
    (`producers.priority.queue_list`); its `properties.priority` is kombu's step, so a restored copy
    goes back onto the same list."""
    body = base64.b64encode(json.dumps([args, kwargs or {}, EMBED], separators=_COMPACT).encode()).decode()
    head, middle, tail = _parts(task_name, queue, kombu_step(priority))
    quoted_id = json.dumps(task_id)
    tag = json.dumps(os.urandom(16).hex())
    ids = f'"id":{quoted_id},"root_id":{quoted_id}{middle}"correlation_id":{quoted_id},"delivery_tag":{tag},'
    return f'{{"body":"{body}",{head}{ids}{tail}}}'


def raw_as_text(raw: bytes | str) -> tuple[str, str]:
    """A payload as JSON-safe text and its encoding: itself when UTF-8, base64 otherwise, so no byte is lost."""
    if isinstance(raw, str):
        return raw, "utf-8"
    try:
        return raw.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        return base64.b64encode(raw).decode(), "base64"


def raw_from_text(text: str, encoding: str) -> bytes | str:
    """Undo `raw_as_text`: base64 back to the original bytes; UTF-8 text stays text."""
    return base64.b64decode(text, validate=True) if encoding == "base64" else text


@lru_cache(maxsize=64)
def _parts(task_name: str, queue: str, step: int) -> tuple[str, str, str]:
    """The constant JSON around the per-message values, per task, queue and priority step."""
    headers = {
        "lang": "py",
        "task": task_name,
        "shadow": None,
        "eta": None,
        "expires": None,
        "group": None,
        "group_index": None,
        "retries": 0,
        "timelimit": [None, None],
        "parent_id": None,
        "argsrepr": "(<trigger request>,)",
        "kwargsrepr": "{}",
        "origin": ORIGIN,
        "ignore_result": True,
    }
    properties = {
        "reply_to": "",
        "delivery_mode": 2,
        "delivery_info": {"exchange": "", "routing_key": queue},
        "priority": step,
        "body_encoding": "base64",
    }
    head = (
        f'"content-encoding":"utf-8","content-type":{json.dumps(CONTENT_TYPE)},"headers":{{'
        + json.dumps(headers, separators=_COMPACT)[1:-1]
        + ","
    )
    middle = '},"properties":{'
    tail = json.dumps(properties, separators=_COMPACT)[1:-1] + "}"
    return head, middle, tail
