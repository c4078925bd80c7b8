"""Polling for a condition in integration tests: one helper instead of one per test module."""

from __future__ import annotations

import time
from collections.abc import Callable


def wait_for(predicate: Callable[[], bool], timeout: float = 90, interval: float = 0.1) -> bool:
    """True once `predicate()` is true, False if it is still false after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return False
