"""Issue 13: exactly one outcome under every interleaving, on the real Redis.

Scripted interleavings reproduce each finding of the protocol review; a seeded explorer then
runs a few hundred random schedules (two or three workers, crashes, Redis errors before and
after writes, leases running out) and checks the invariants after every one.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
import redis

from pipelines.registry import PipelineRegistry
from producers import keys
from producers.contract import TriggerRequest
from producers.state import RequestState, Status
from tests.support.interleaving import LEASE, Scheduler, SimWorker, check_invariants
from worker.outcomes import Refused, Step

SCHEDULES = int(os.environ.get("TRIGGER_INTERLEAVING_SCHEDULES", "200"))


@pytest.fixture(scope="module")
def registry() -> PipelineRegistry:
    return PipelineRegistry.from_paths()


@pytest.fixture
def client(redis_url: str) -> Iterator[redis.Redis]:
    connection = redis.Redis.from_url(redis_url)
    yield connection
    connection.flushdb()


def request(request_id: str = "r-1", key: str | None = "drift:churn") -> TriggerRequest:
    return TriggerRequest(request_id=request_id, pipeline_name="training_pipeline", idempotency_key=key)


def deliver_on(scheduler: Scheduler, worker: SimWorker, until: str | None = None, detail: str | None = None) -> None:
    """Start the next pending delivery on `worker`; let it run to the point `until` (and `detail`) or its end."""
    thread = scheduler._start(worker, scheduler.pending.pop(0))
    scheduler._wait_settled(worker)
    run_to(scheduler, worker, until, detail)
    if worker.name in scheduler.done:
        thread.join()


def run_to(scheduler: Scheduler, worker: SimWorker, until: str | None, detail: str | None = None) -> None:
    """Let a parked worker go on until it parks at `until` (with `detail`, when given) or finishes."""
    while worker.name not in scheduler.done:
        point, at = scheduler.waiting[worker.name]
        if point == until and detail in (None, at):
            return
        scheduler.waiting.pop(worker.name)
        worker.turn.release()
        scheduler._wait_settled(worker)


def resume(scheduler: Scheduler, worker: SimWorker, fault: str | None = None) -> None:
    """Let a parked worker finish its delivery (with `fault` at its next point, if given)."""
    if fault:
        scheduler.faults[worker.name] = fault
    run_to(scheduler, worker, None)


def test_a_failed_outcome_is_one_write_so_a_lost_reply_leaves_no_half(client: redis.Redis, registry) -> None:  # type: ignore[no-untyped-def]
    """Finding 1: state, dead letter and key release were three writes; a stall between them stuck the key."""
    sim = Scheduler(client, registry, seed=1, results=("failed",))
    a = sim.workers[0]
    sim.send(request())
    deliver_on(sim, a, until="record", detail="failed")
    resume(sim, a, fault="error-after")  # the failed outcome was written, its reply lost: requeued
    assert sim.done[a.name] == "requeued"
    deliver_on(sim, a)  # the redelivered copy finds it ended

    assert check_invariants(client, sim.ledger, ["r-1"]) == []
    assert client.get(keys.dead_letter_key("r-1")) is not None
    assert client.get(keys.idempotency_key("drift:churn")) is None, "a failed request frees its key"


def test_a_worker_that_lost_its_lease_can_record_nothing(client: redis.Redis, registry) -> None:  # type: ignore[no-untyped-def]
    """Finding 2: a failure recorded after the lease was gone wrote `retrying` over `succeeded`."""
    sim = Scheduler(client, registry, seed=2, results=("transient", "completed"))
    a, b = sim.workers
    sim.send(request())
    deliver_on(sim, a, until="run")  # A is inside its run
    client.delete(keys.lease_key("r-1"))  # A's lease ran out (a stall, a long GC)
    sim.advance(3 * LEASE)
    sim.workers[0].leases.dead = True  # A looks dead: no heartbeat marks it seen
    sim.send(request())  # the copy kombu restores
    sim.results = ("completed",)
    deliver_on(sim, b)  # B counts A's attempt lost and schedules a retry
    sim.release_schedule()
    deliver_on(sim, b)  # B runs attempt 2 and succeeds
    assert RequestState.model_validate_json(client.get(keys.state_key("r-1"))).status is Status.SUCCEEDED
    a.leases.dead = False
    sim.results = ("transient",)
    resume(sim, a)  # A's run ends in a transient error: its `retrying` write is fenced

    state = RequestState.model_validate_json(client.get(keys.state_key("r-1")))
    assert state.status is Status.SUCCEEDED
    assert client.zcard(keys.retry_schedule_key("sim")) == 0, "no further attempt was scheduled"
    assert sim.ledger.completed("r-1") == 1


def test_a_terminal_state_is_never_overwritten_even_without_a_lease(client: redis.Redis, registry) -> None:  # type: ignore[no-untyped-def]
    sim = Scheduler(client, registry, seed=3)
    worker = sim.workers[0]
    done = RequestState(request_id="t-1", status=Status.SUCCEEDED)
    worker.processor.outcomes.inner.record(Step(done), holder=None)
    with pytest.raises(Refused, match="terminal"):
        worker.processor.outcomes.inner.record(Step(done.advance(Status.RETRYING)), holder=None)
    with pytest.raises(Refused, match="fenced"):
        worker.processor.outcomes.inner.record(Step(RequestState(request_id="t-2", status=Status.RUNNING)), "nobody")


def test_retry_schedules_are_per_queue(client: redis.Redis, registry) -> None:  # type: ignore[no-untyped-def]
    """Finding 3: two deployments on one Redis received each other's retries."""
    from worker.schedule import RetrySchedule

    team_a, team_b = RetrySchedule(client, "team-a"), RetrySchedule(client, "team-b")
    team_a.add("envelope-of-a", 0)
    assert team_b.release_due() == 0 and client.llen("team-b") == 0
    assert team_a.release_due() == 1 and client.lrange("team-a", 0, -1) == [b"envelope-of-a"]


def test_a_lease_that_expired_during_an_outage_is_taken_back_by_its_live_holder(
    client: redis.Redis,
    registry,  # type: ignore[no-untyped-def]
) -> None:
    """Finding 4: the heartbeat could never take back an expired lease, so a copy ran beside the live run."""
    sim = Scheduler(client, registry, seed=4)
    a, b = sim.workers
    sim.send(request())
    deliver_on(sim, a, until="run")
    client.delete(keys.lease_key("r-1"))  # Redis was away longer than the lease
    assert a.leases.refresh("r-1", None) == 2, "the live holder takes it back"
    sim.send(request())
    deliver_on(sim, b)  # the restored copy
    assert sim.done[b.name] == "acked" and client.zcard(keys.retry_schedule_key("sim")) == 1  # deferred
    resume(sim, a)

    assert check_invariants(client, sim.ledger, ["r-1"]) == []
    assert len(sim.ledger.runs) == 1


def test_a_copy_waits_behind_a_live_holder_even_without_its_lease(client: redis.Redis, registry) -> None:  # type: ignore[no-untyped-def]
    """Finding 4, the other order: the copy wins the race for the expired lease, but A is still alive."""
    sim = Scheduler(client, registry, seed=5)
    a, b = sim.workers
    sim.send(request())
    deliver_on(sim, a, until="run")
    client.delete(keys.lease_key("r-1"))
    sim.send(request())
    deliver_on(sim, b)  # B takes the lease, sees A was heard from moments ago: defers, starts nothing
    assert len(sim.ledger.runs) == 1 and sim.done[b.name] == "acked"
    assert a.leases.refresh("r-1", None) == 2
    resume(sim, a)
    sim.release_schedule()
    deliver_on(sim, b)

    assert check_invariants(client, sim.ledger, ["r-1"]) == []
    assert len(sim.ledger.runs) == 1


def test_an_earlier_server_run_whose_id_was_never_recorded_is_followed_not_resubmitted(
    client: redis.Redis,
    registry,  # type: ignore[no-untyped-def]
) -> None:
    """Finding 6: the server took the run, recording its id failed; the copy submitted a second run."""
    from tests.unit.conftest import FakeServer
    from worker.runner import RunOutcome

    sim = Scheduler(client, registry, seed=6)
    worker = sim.workers[0]
    processor = worker.processor
    template = type("T", (), {"ref": "nightly@1", "name": "nightly"})()
    server = FakeServer(available=True, outcome=RunOutcome("server-run-1", "training_pipeline-r-1-1", "completed"))
    processor.s.server = server  # type: ignore[assignment]
    sim.ledger.runs["training_pipeline-r-1-1"] = "running"  # on the server, under the attempt's run name
    state = RequestState.queued(request(key=None)).advance(
        Status.RUNNING, attempts=1, run_name="training_pipeline-r-1-1"
    )
    from worker.processing import Target
    from worker.validation import RunPlan

    target = Target(registry.get("training_pipeline"), RunPlan("training_pipeline"), template)  # type: ignore[arg-type]
    outcome = processor.execution.earlier_outcome(target, state)

    assert outcome is not None and outcome.run_id == "server-run-1"
    assert server.calls == [("follow", "id-training_pipeline-r-1-1", "training_pipeline-r-1-1", "nightly@1")]


@pytest.mark.parametrize("workers", [2, 3])
def test_random_schedules_keep_every_invariant(client: redis.Redis, registry, workers: int) -> None:  # type: ignore[no-untyped-def]
    explored, broken = 0, []
    for seed in range(SCHEDULES // 2):
        client.flushdb()
        sim = Scheduler(client, registry, seed=seed * 7 + workers, workers=workers, kill=0.06, redis=0.08)
        ids = ["r-1", "r-2"]
        sim.send(request("r-1"))
        sim.send(request("r-1"))  # a producer's re-send of the same id
        sim.send(request("r-2", key="drift:other"))
        sim.explore()
        explored += 1
        problems = check_invariants(client, sim.ledger, ids) + sim.escaped
        if problems:
            broken.append((seed, problems))
    print(f"\n{explored} schedules explored with {workers} workers; {len(broken)} broke an invariant")
    assert broken == [], broken[:5]


def test_a_message_popped_and_lost_in_flight_is_sent_again(stack) -> None:  # type: ignore[no-untyped-def]
    """Plausible finding, confirmed and closed: BRPOP took the message, nothing recorded it as unacked."""
    request_id = stack.client.trigger("slow_pipeline", parameters={"seconds": 0.1})
    assert stack.redis.rpop(stack.queue) is not None  # popped; the main process died before recording it
    stack.start_worker(TRIGGER_LOST_AFTER="2", TRIGGER_SWEEP_INTERVAL="1")

    state = stack.wait(request_id, timeout=120)

    assert state.status is Status.SUCCEEDED, stack.logs()
    assert stack.logged("trigger.resent")
