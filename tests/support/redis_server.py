"""A `redis-server` of a test's own, with AOF `appendfsync always`, that the test may kill and start again."""

from __future__ import annotations

import shutil
import socket
import subprocess
from pathlib import Path

import redis

from tests.support.waiting import wait_for


def free_port() -> int:
    """A loopback port nothing listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_redis(port: int, data_dir: Path) -> subprocess.Popen[bytes]:
    """Start (or start again) a persistent Redis on `port` over `data_dir`; returns once it answers."""
    binary = shutil.which("redis-server")
    assert binary, "redis-server is needed for the restart tests"
    options = ["--port", str(port), "--bind", "127.0.0.1", "--dir", str(data_dir)]
    options += ["--appendonly", "yes", "--appendfsync", "always", "--save", ""]
    process = subprocess.Popen([binary, *options], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    assert wait_for(lambda: pings(redis.Redis(port=port)), timeout=10)
    return process


def pings(client: redis.Redis) -> bool:
    """Whether the server answers."""
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False
