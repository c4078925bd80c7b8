"""Run time limits: a hung run is interrupted in its own thread, and killed if it will not stop.

The soft limit is a `SIGALRM` timer that raises `RunTimeout` inside the run (a step
blocked in `open()` on a FIFO or looping in Python stops there, and ZenML marks the
step failed). If the run swallows that and goes on, the alarm fires again every
`repeat` seconds; code that holds the GIL in C is stopped by the prefork pool's hard
limit (`time_limit`), which kills the child.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

from worker.errors import RunTimeout


@contextmanager
def deadline(seconds: float, what: str, repeat: float = 5.0) -> Iterator[None]:
    """Raise `RunTimeout` in the body once `seconds` have passed (a no-op off the main thread)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_alarm(signum: int, frame: FrameType | None) -> None:
        raise RunTimeout(f"{what} exceeded its run time limit of {seconds:g}s and was stopped")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds, repeat)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
