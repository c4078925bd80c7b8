"""Celery's task message protocol 2, as kombu's Redis transport stores it.

Building the envelope here lets a web app enqueue with one Redis round trip and
without installing Celery. `worker.transport` checks the same shape on the way in.
"""

from __future__ import annotations

import base64
import json
import socket
import uuid
from typing import Any

CONTENT_TYPE = "application/json"
EMBED = {"callbacks": None, "errbacks": None, "chain": None, "chord": None}
ORIGIN = f"producer@{socket.gethostname()}"


def task_envelope(
    task_name: str, task_id: str, args: list[Any], queue: str, kwargs: dict[str, Any] | None = None
) -> str:
    """The JSON text kombu's Redis transport expects on the queue's list."""
    body = json.dumps([args, kwargs or {}, EMBED], separators=(",", ":")).encode()
    return json.dumps(
        {
            "body": base64.b64encode(body).decode(),
            "content-encoding": "utf-8",
            "content-type": CONTENT_TYPE,
            "headers": _headers(task_name, task_id),
            "properties": _properties(task_id, queue),
        },
        separators=(",", ":"),
    )


def _headers(task_name: str, task_id: str) -> dict[str, Any]:
    return {
        "lang": "py",
        "task": task_name,
        "id": task_id,
        "shadow": None,
        "eta": None,
        "expires": None,
        "group": None,
        "group_index": None,
        "retries": 0,
        "timelimit": [None, None],
        "root_id": task_id,
        "parent_id": None,
        "argsrepr": "(<trigger request>,)",
        "kwargsrepr": "{}",
        "origin": ORIGIN,
        "ignore_result": True,
    }


def _properties(task_id: str, queue: str) -> dict[str, Any]:
    return {
        "correlation_id": task_id,
        "reply_to": "",
        "delivery_mode": 2,
        "delivery_info": {"exchange": "", "routing_key": queue},
        "priority": 0,
        "body_encoding": "base64",
        "delivery_tag": str(uuid.uuid4()),
    }
