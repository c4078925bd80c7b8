"""Delayed runs on the worker's side: a request never starts before its `not_before`, however it arrived.

The producer holds a delayed request in the retry schedule until it is due (`producers.delayed`);
a message pushed some other way (a raw push, an old client, a replay) may arrive early, and so may
one released by a worker whose clock runs ahead of the producer's.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from producers.contract import TriggerRequest
from producers.state import RequestState
from worker.admission import ADMIT, Verdict

EARLY_TOLERANCE_S = 1.0
"""A request due within this many seconds starts now: not worth a trip through the retry schedule."""


class NotBefore:
    """The admission control that defers a request arriving before its `not_before` until then."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock

    def decide(self, request: TriggerRequest, state: RequestState) -> Verdict:
        """Admit a request that is due (or has no `not_before`); defer one that is early until it is."""
        if request.not_before is None:
            return ADMIT
        wait = request.not_before.timestamp() - self.clock()
        if wait <= EARLY_TOLERANCE_S:
            return ADMIT
        return Verdict("defer", reason=f"it is not to run before {request.not_before.isoformat()}", delay=wait)

    def release(self, request: TriggerRequest) -> None:
        """Nothing to give back: deciding took nothing."""
