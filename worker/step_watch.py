"""The step watch: which ZenML step a run is in, recorded on its request's state while it runs.

A thread of its own looks the run's running step up through the ZenML client every
`step_interval` seconds (ZenML 0.98 offers no hook a second thread could hear a step start by:
its step context is a context variable of the running thread) and writes a change onto the
state with a compare-and-set fenced by the lease (`Outcomes.amend`), so it can never overwrite
what the walk records. The watch is an observer: a failed look-up or write is logged once and
the run goes on; the run never waits for a look-up.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from producers import keys
from producers.state import RequestState, StateStore, Status
from worker.logs import get_logger
from worker.outcomes import Outcomes

Lookup = Callable[[str], "str | None"]
"""Run name -> the name of the step running in it, or None."""


@dataclass
class Seen:
    """The last step the watch saw a run in."""

    step: str | None = None

    def stamp(self, state: RequestState) -> RequestState:
        """`state` with the last step seen, for the attempt's final state (unchanged when none was)."""
        return state if self.step is None else state.model_copy(update={"step": self.step})


class StepWatch:
    """Watches one run at a time per call of `watching`; `interval` 0 turns it off."""

    def __init__(self, lookup: Lookup, states: StateStore, outcomes: Outcomes, interval: float) -> None:
        self.lookup = lookup
        self.states = states
        self.outcomes = outcomes
        self.interval = interval
        self.log = get_logger()

    @contextmanager
    def watching(self, started: RequestState, holder: str | None) -> Iterator[Seen]:
        """While the body runs the attempt `started`, record the step it is in (needs the lease `holder`)."""
        seen, stop = Seen(), threading.Event()
        if self.interval > 0 and holder is not None and started.run_name:
            args = (started.request_id, started.run_name, holder, seen, stop)
            threading.Thread(target=self._watch, args=args, daemon=True, name="step-watch").start()
        try:
            yield seen
        finally:
            stop.set()  # not joined: a look-up in flight must not hold the run's end

    def _watch(self, request_id: str, run_name: str, holder: str, seen: Seen, stop: threading.Event) -> None:
        failed = False
        while not stop.wait(self.interval):
            try:
                if not self._look(request_id, run_name, holder, seen):
                    return
            except Exception as exc:  # noqa: BLE001 - an observer: whatever it meets, the run goes on
                if not failed:
                    self.log.warning("trigger.step_watch_failed", request_id=request_id, error=_described(exc))
                failed = True

    def _look(self, request_id: str, run_name: str, holder: str, seen: Seen) -> bool:
        """One look: record the step when the state does not show it yet; False once there is nothing more
        to watch (the request ended, or this worker lost its lease)."""
        step = self.lookup(run_name)
        if step is None:
            return True
        seen.step = step
        read = self.states.client.get(keys.state_key(request_id))
        state = RequestState.model_validate_json(read) if read else None
        if state is None or state.status is not Status.RUNNING:
            return False
        if state.step == step:
            return True
        outcome = self.outcomes.amend(read, state.model_copy(update={"step": step}), holder)
        return outcome != "fenced"  # 'changed': the walk wrote meanwhile; the next look tries again


def _described(exc: Any) -> str:
    return f"{type(exc).__name__}: {exc}"
