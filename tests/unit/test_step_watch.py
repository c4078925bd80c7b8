"""The step watch: the ZenML step a run is in reaches its request's state, fenced by the lease, never in its way."""

from __future__ import annotations

import threading
from typing import Any

import fakeredis
import pytest
from structlog.testing import capture_logs

from producers import keys
from producers.state import RequestState, StateStore, Status
from worker.dead_letters import DeadLetterStore
from worker.lease import Leases
from worker.outcomes import Outcomes
from worker.schedule import RetrySchedule
from worker.step_watch import Seen, StepWatch

HOLDER = "holder-1"
FENCE = f"{HOLDER}:1"  # the lease as its first acquisition holds it


class Parts:
    """A running request under HOLDER's lease on fakeredis, and what the watch writes through."""

    def __init__(self) -> None:
        client = fakeredis.FakeRedis()
        self.states = StateStore(client, 3600)
        self.outcomes = Outcomes(self.states, DeadLetterStore(client, 10, 3600), RetrySchedule(client, "q"))
        self.leases = Leases(client, 60, 10, holder=HOLDER)
        self.started = RequestState(request_id="r1", status=Status.RUNNING, attempts=1, run_name="p-r1-1")
        self.states.put(self.started)
        assert self.leases.acquire("r1")

    def watch(self, lookup: Any, interval: float = 1.0) -> StepWatch:
        return StepWatch(lookup, self.states, self.outcomes, interval)

    def stored(self) -> RequestState:
        state = self.states.get("r1")
        assert state is not None
        return state


@pytest.fixture
def parts() -> Parts:
    return Parts()


def test_a_new_step_is_recorded_on_the_running_state_and_kept_for_the_final_one(parts: Parts) -> None:
    seen = Seen()
    steps = iter(["load_data", "load_data", "train_model"])
    watch = parts.watch(lambda run_name: next(steps))
    assert watch._look("r1", "p-r1-1", FENCE, seen) and parts.stored().step == "load_data"
    assert watch._look("r1", "p-r1-1", FENCE, seen) and watch._look("r1", "p-r1-1", FENCE, seen)
    stored = parts.stored()
    assert stored.step == "train_model" and stored.status is Status.RUNNING
    assert stored.model_copy(update={"step": None}) == parts.started, "nothing else of the state changes"
    assert seen.stamp(parts.started.advance(Status.SUCCEEDED)).step == "train_model"


def test_a_worker_that_lost_the_lease_records_nothing_and_stops_watching(parts: Parts) -> None:
    parts.states.client.set(keys.lease_key("r1"), "another-holder")
    assert not parts.watch(lambda run_name: "train_model")._look("r1", "p-r1-1", FENCE, Seen())
    assert parts.stored().step is None


def test_an_ended_request_is_not_written_again(parts: Parts) -> None:
    ended = parts.started.advance(Status.SUCCEEDED)
    parts.states.put(ended)
    assert not parts.watch(lambda run_name: "train_model")._look("r1", "p-r1-1", FENCE, Seen())
    assert parts.stored() == ended


def test_a_write_of_the_walk_since_the_read_wins(parts: Parts) -> None:
    """The state moved on between the watch's read and its write: the compare-and-set leaves it alone."""
    read = parts.states.client.get(keys.state_key("r1"))
    moved = parts.started.model_copy(update={"run_id": "server-run-1"})
    parts.states.put(moved)
    assert parts.outcomes.amend(read, parts.started.model_copy(update={"step": "s"}), FENCE) == "changed"
    assert parts.stored() == moved


def test_a_step_a_write_of_the_walk_dropped_is_written_again(parts: Parts) -> None:
    """The walk writes from its own copy of the state (a server run's id, say), which has no step."""
    seen, watch = Seen(), parts.watch(lambda run_name: "train_model")
    assert watch._look("r1", "p-r1-1", FENCE, seen)
    parts.states.put(parts.started.model_copy(update={"run_id": "server-run-1"}))
    assert watch._look("r1", "p-r1-1", FENCE, seen)
    assert parts.stored().step == "train_model" and parts.stored().run_id == "server-run-1"


def test_a_failing_look_up_is_logged_once_and_the_run_goes_on(parts: Parts) -> None:
    looked = threading.Event()
    calls: list[str] = []

    def broken(run_name: str) -> str:
        calls.append(run_name)
        if len(calls) >= 3:
            looked.set()
        raise ConnectionError("store away")

    with capture_logs() as logs, parts.watch(broken, interval=0.01).watching(parts.started, FENCE) as seen:
        assert looked.wait(30), "the watch kept looking"
    assert [e["event"] for e in logs].count("trigger.step_watch_failed") == 1
    assert seen.step is None and parts.stored() == parts.started


def test_nothing_is_watched_without_a_lease_or_with_the_interval_zero(parts: Parts) -> None:
    calls: list[str] = []
    for watch, holder in ((parts.watch(calls.append, interval=0), FENCE), (parts.watch(calls.append, 0.01), None)):
        with watch.watching(parts.started, holder) as seen:
            threading.Event().wait(0.05)
        assert seen == Seen()
    assert calls == []
