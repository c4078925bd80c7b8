"""`trigger status ID --wait`: follow a request to its end, showing where it is on the way.

On a terminal, one line is rewritten in place (state, attempt, elapsed, and the ZenML step running
when the worker has seen it); when piped, a plain line is
printed each time the state changes, so a CI log shows the history without control characters.
Progress goes to stderr: stdout keeps only the final state, as before, for scripts that parse it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TextIO

from producers.state import RequestState, Status

Read = Callable[[], RequestState]


def follow(
    read: Read,
    timeout: float,
    out: TextIO,
    tty: bool,
    poll: float = 0.5,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> RequestState:
    """Poll `read` until a terminal state or `timeout` seconds, reporting each state to `out`."""
    started, shown = clock(), ""
    state = read()
    while True:
        line = progress_line(state, clock() - started)
        shown = _show(out, tty, line, shown, state)
        if state.status.terminal or clock() - started >= timeout:
            break
        sleep(min(poll, max(0.0, timeout - (clock() - started))))
        state = read()
    if tty:
        out.write("\n")
    return state


def progress_line(state: RequestState, waited: float) -> str:
    """`<id>: running · attempt 2 · 14.2s · step train_model`, plus what the state says of where it is."""
    parts = [f"{state.request_id}: {state.status.value}"]
    if state.attempts:
        parts.append(f"attempt {state.attempts}")
    if state.run_name and not state.status.terminal:
        parts.append(f"run {state.run_name}")
    if state.next_attempt_at is not None and not state.status.terminal:
        parts.append(f"next attempt at {state.next_attempt_at:%H:%M:%S}")
    parts.append(f"{waited:.1f}s")
    if state.step and state.status is Status.RUNNING:
        parts.append(f"step {state.step}")
    return " · ".join(parts)


def _show(out: TextIO, tty: bool, line: str, shown: str, state: RequestState) -> str:
    """Rewrite the line on a terminal; print a line per change of state otherwise. Returns what is shown."""
    if tty:
        out.write("\r\033[2K" + line)
        out.flush()
        return line
    key = f"{state.status.value}:{state.attempts}:{state.run_name}:{state.step}"
    if key != shown:
        out.write(line + "\n")
        out.flush()
    return key
