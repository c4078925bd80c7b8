"""What an enqueue left in Redis, comparable across clients: every key's type and content, volatile parts blanked."""

from __future__ import annotations

import json
from typing import Any

import redis

VOLATILE = "*"


def snapshot(client: redis.Redis) -> dict[str, Any]:
    """Every key with its type, whether it expires, and its content (delivery tags, stamps and scores blanked)."""
    return {key.decode(): _entry(client, key) for key in sorted(client.keys("*"))}


def _entry(client: redis.Redis, key: bytes) -> dict[str, Any]:
    kind = client.type(key).decode()
    return {"type": kind, "expires": client.ttl(key) > 0, "value": _READERS[kind](client, key)}


def _string(client: redis.Redis, key: bytes) -> Any:
    raw = client.get(key)
    try:
        value = json.loads(raw)
    except ValueError:
        return raw.decode()
    return {**value, "updated_at": VOLATILE} if isinstance(value, dict) and "updated_at" in value else value


def _list(client: redis.Redis, key: bytes) -> list[Any]:
    return [_envelope(item) for item in client.lrange(key, 0, -1)]


def _zset(client: redis.Redis, key: bytes) -> list[str]:
    return [member.decode() for member in client.zrange(key, 0, -1)]  # scores are enqueue times


def _hash(client: redis.Redis, key: bytes) -> dict[str, Any]:
    return {field.decode(): _envelope(value) for field, value in client.hgetall(key).items()}


def _envelope(raw: bytes) -> dict[str, Any]:
    """A task message with its random delivery tag blanked; everything else must match byte for byte."""
    envelope = json.loads(raw)
    envelope["properties"]["delivery_tag"] = VOLATILE
    return envelope


_READERS = {"string": _string, "list": _list, "zset": _zset, "hash": _hash}
