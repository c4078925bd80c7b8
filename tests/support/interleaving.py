"""A deterministic interleaving harness for the worker's Redis protocol.

Simulated workers are real `Processor`s (each with its own lease holder id) over one real
Redis. Each runs in its own thread, but only one thread moves at a time: at every named
point of the walk (`Services.checkpoint`, the run itself, each recorded step) a worker hands
the baton back to the scheduler, which picks who goes next, or makes the worker crash
(`Killed`: its lease stays behind, as a dead process's would) or hit a Redis error (before a
write, or after it was applied with the reply lost). A seeded scheduler makes every
schedule reproducible; a scripted one replays a chosen interleaving.

The "broker" is a list of pending deliveries: a delivery that ends normally is acked, one
that raised a Redis error or was killed is delivered again, and due entries of the retry
schedule become deliveries like kombu would make them.
"""

from __future__ import annotations

import base64
import json
import random
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import redis

from pipelines.registry import PipelineRegistry
from producers import keys
from producers.contract import TriggerRequest, encode_request
from producers.state import RequestState, StateStore, Status
from worker.dead_letters import DeadLetterStore
from worker.errors import PipelineRunFailed, StoreUnavailable, UnknownTemplate
from worker.idempotency import IdempotencyClaims
from worker.lease import Leases
from worker.outcomes import Outcomes, Step
from worker.processing import Delivery, Processor, Services
from worker.runner import RunOutcome
from worker.schedule import RetrySchedule
from worker.settings import WorkerSettings
from worker.transport import safe_loads

LEASE = 30
POINTS = ("admitted", "leased", "started", "run", "ran", "record")


class Killed(BaseException):
    """The simulated worker process died here (not an Exception: nothing in the worker catches it)."""


class Clock:
    """Simulated time for lease liveness; advanced by the scheduler, never by sleeping."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


@dataclass
class Ledger:
    """What happened in "ZenML": every run started and how it ended, by run name."""

    runs: dict[str, str] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def completed(self, request_id: str) -> int:
        return sum(1 for name, status in self.runs.items() if request_id in name and status == "completed")


class SimRunner:
    """A ZenML stand-in: each run is one point where the scheduler may interleave or kill the worker."""

    def __init__(self, worker: SimWorker, ledger: Ledger) -> None:
        self.worker, self.ledger = worker, ledger

    def run(self, entry: Any, plan: Any, run_name: str, run_config: Any = None, provenance: Any = None) -> RunOutcome:
        self.ledger.runs[run_name] = "running"
        self.worker.point("run", run_name)
        result = self.worker.scheduler.run_result(run_name)
        self.ledger.runs[run_name] = "completed" if result == "completed" else "failed"
        if result == "transient":
            raise StoreUnavailable(f"run {run_name}: the store went away")
        if result == "failed":
            raise PipelineRunFailed(f"run {run_name} failed", run_id=f"id-{run_name}", run_name=run_name)
        return RunOutcome(f"id-{run_name}", run_name, "completed", {"accuracy": 1.0})

    def find(self, run_name: str, entry: Any) -> RunOutcome | None:
        status = self.ledger.runs.get(run_name)
        return None if status is None else RunOutcome(f"id-{run_name}", run_name, status)

    def run_id(self, run_name: str) -> str | None:
        return f"id-{run_name}" if run_name in self.ledger.runs else None

    def abandon(self, run_name: str, reason: str) -> str | None:
        if self.ledger.runs.get(run_name) == "running":
            self.ledger.runs[run_name] = "failed"
        return self.run_id(run_name)

    def running_step(self, run_name: str) -> str | None:
        return None

    def link(self, *args: Any) -> None:
        return None


class NoTemplates:
    """The simulation triggers pipelines only."""

    def get(self, ref: str) -> Any:
        raise UnknownTemplate(f"template {ref!r} does not exist")


class NoServer:
    """No ZenML server: every run is in-process."""

    def available(self, template: Any) -> bool:
        return False


class SimLeases(Leases):
    """Leases whose release is skipped once the worker is dead: a killed process frees nothing."""

    dead = False

    def release(self, request_id: str) -> None:
        if not self.dead:
            super().release(request_id)


class SimOutcomes(Outcomes):
    """Every recorded step is a point: a Redis error may come before the write or after it (reply lost)."""

    def __init__(self, worker: SimWorker, inner: Outcomes) -> None:
        self.worker, self.inner = worker, inner

    def record(self, step: Step, holder: str | None) -> None:
        fault = self.worker.point("record", step.state.status.value)
        if fault == "error-before":
            raise redis.ConnectionError("simulated: Redis stalled before the write")
        self.inner.record(step, holder)
        if fault == "error-after":
            raise redis.ConnectionError("simulated: the write was applied but its reply was lost")


class SimWorker:
    """One simulated worker process: a real `Processor` whose every named point yields to the scheduler."""

    def __init__(self, name: str, client: redis.Redis, scheduler: Scheduler, settings: WorkerSettings) -> None:
        self.name, self.scheduler = name, scheduler
        self.turn = threading.Semaphore(0)
        self.leases = SimLeases(client, LEASE, 10_000, holder=f"holder-{name}", clock=scheduler.clock)
        services = Services(
            settings=settings,
            registry=scheduler.registry,
            states=StateStore(client, settings.state_ttl),
            dead_letters=DeadLetterStore(client, 1000, 3600),
            claims=IdempotencyClaims(client, settings.dedup_window),
            leases=self.leases,
            schedule=RetrySchedule(client, settings.queue),
            runner=SimRunner(self, scheduler.ledger),  # type: ignore[arg-type]
            templates=NoTemplates(),  # type: ignore[arg-type]
            server=NoServer(),  # type: ignore[arg-type]
            checkpoint=lambda point, request_id: self.point(point, request_id),
        )
        self.processor = Processor(services)
        self.processor.recorder.outcomes = SimOutcomes(self, self.processor.outcomes)

    def point(self, name: str, detail: str) -> str | None:
        """Hand the baton back, wait for it, then do what the scheduler decided for this point."""
        self.scheduler.arrived(self, name, detail)
        self.turn.acquire()
        fault = self.scheduler.fault_for(self)
        if fault == "kill":
            self.leases.dead = True
            raise Killed(f"{self.name} killed at {name}")
        if fault == "redis" and name != "record":
            raise redis.ConnectionError(f"simulated Redis error at {name}")
        return fault


class Scheduler:
    """Runs deliveries on simulated workers, one step at a time, as a seeded or scripted schedule decides."""

    def __init__(self, client: redis.Redis, registry: PipelineRegistry, seed: int, workers: int = 2, **faults: float):
        self.client, self.registry, self.rng = client, registry, random.Random(seed)
        self.clock, self.ledger = Clock(), Ledger()
        self.kill_rate = faults.get("kill", 0.05)
        self.redis_rate = faults.get("redis", 0.05)
        self.results = faults.get("results", ("completed", "completed", "failed", "transient"))
        self.settings = WorkerSettings(
            redis_url="redis://unused.invalid", queue="sim", lease_timeout=LEASE, heartbeat_interval=5, max_attempts=3
        )
        self.workers = [SimWorker(f"w{i}", client, self, self.settings) for i in range(workers)]
        self.pending: list[Delivery] = []
        self.waiting: dict[str, tuple[str, str]] = {}  # worker name -> (point, detail)
        self.done: dict[str, str] = {}  # worker name -> how its delivery ended
        self.faults: dict[str, str | None] = {}
        self.steps = 0
        self.escaped: list[str] = []  # exceptions that got past the processor's guard
        self._arrival = threading.Condition()

    # -- the broker ------------------------------------------------------------

    def send(self, request: TriggerRequest) -> None:
        """What the producer does: record `queued` and push the message."""
        self.client.set(keys.state_key(request.request_id), RequestState.queued(request).to_json(), ex=3600, nx=True)
        self.pending.append(Delivery(raw=encode_request(request), task_id=request.request_id))

    def release_schedule(self) -> None:
        """Due or not, scheduled envelopes become deliveries (early is just another redelivery)."""
        schedule = keys.retry_schedule_key(self.settings.queue)
        for envelope in self.client.zrange(schedule, 0, -1):
            self.client.zrem(schedule, envelope)
            message = safe_loads(envelope, self.settings.queue)
            args, kwargs, _ = json.loads(base64.b64decode(message["body"]))
            self.pending.append(Delivery(raw=args[0], task_id=message["headers"]["id"], **kwargs))

    # -- the baton ---------------------------------------------------------------

    def arrived(self, worker: SimWorker, point: str, detail: str) -> None:
        with self._arrival:
            self.waiting[worker.name] = (point, detail)
            self._arrival.notify_all()

    def fault_for(self, worker: SimWorker) -> str | None:
        return self.faults.pop(worker.name, None)

    def run_result(self, run_name: str) -> str:
        return str(self.rng.choice(self.results))

    def _start(self, worker: SimWorker, delivery: Delivery) -> threading.Thread:
        def body() -> None:
            try:
                worker.processor.handle(delivery)
                outcome = "acked"
            except redis.RedisError:
                outcome = "requeued"
            except Killed:
                outcome = "killed"
            except BaseException as exc:  # noqa: BLE001 - escaped the guard: the test reports it
                outcome = f"raised {type(exc).__name__}: {exc}"
            with self._arrival:
                if outcome.startswith("raised"):
                    self.escaped.append(outcome)
                self.done[worker.name] = outcome
                if outcome in ("requeued", "killed"):
                    self.pending.append(delivery)
                self._arrival.notify_all()

        self.done.pop(worker.name, None)
        thread = threading.Thread(target=body, name=worker.name, daemon=True)
        thread.start()
        return thread

    def _wait_settled(self, worker: SimWorker) -> None:
        """Block until `worker` is parked at a point or finished its delivery."""
        with self._arrival:
            settled = self._arrival.wait_for(lambda: worker.name in self.waiting or worker.name in self.done, 10)
        assert settled, f"{worker.name} neither reached a point nor finished"

    def explore(self, max_steps: int = 400) -> None:
        """Run until no delivery is pending or running, choosing every step with the seeded RNG."""
        busy: dict[str, threading.Thread] = {}
        while self.steps < max_steps:
            self.steps += 1
            for name in [n for n in busy if n in self.done]:
                busy.pop(name).join()
            idle = [w for w in self.workers if w.name not in busy]
            if not busy and not self.pending:
                self.release_schedule()
                if not self.pending:
                    return
            if idle and self.pending and (not busy or self.rng.random() < 0.5):
                worker = self.rng.choice(idle)
                delivery = self.pending.pop(self.rng.randrange(len(self.pending)))
                self._revive(worker)
                busy[worker.name] = self._start(worker, delivery)
                self._wait_settled(worker)
                continue
            if not busy:
                self.release_schedule()
                continue
            self._step(self.rng.choice([w for w in self.workers if w.name in busy]))
        raise AssertionError(f"schedule did not drain within {max_steps} steps")

    def _step(self, worker: SimWorker) -> None:
        """Let a parked worker go on to its next point, maybe with a fault; time may pass."""
        point, _ = self.waiting.pop(worker.name)
        roll = self.rng.random()
        if roll < self.kill_rate:
            self.faults[worker.name] = "kill"
            self.advance(3 * LEASE)  # long enough for its lease to expire and its silence to show
        elif roll < self.kill_rate + self.redis_rate:
            record_faults = ["error-before", "error-after"]
            self.faults[worker.name] = self.rng.choice(record_faults) if point == "record" else "redis"
        if self.rng.random() < 0.1:
            self._expire_leases()
        worker.turn.release()
        self._wait_settled(worker)

    def advance(self, seconds: float) -> None:
        """Time passes: live workers heartbeat the leases they hold, as their threads would."""
        self.clock.now += seconds
        for worker in self.workers:
            if worker.leases.dead:
                continue
            for key in self.client.scan_iter(keys.lease_key("*")):
                request_id = key.decode().rsplit(":", 1)[1]
                if self.client.get(key) == (worker.leases.fence(request_id) or "").encode():
                    worker.leases.refresh(request_id, None)

    def _expire_leases(self) -> None:
        """Time passes: leases whose holder is dead run out (live holders keep theirs by heartbeat)."""
        for worker in self.workers:
            if worker.leases.dead:
                for key in self.client.scan_iter(keys.lease_key("*")):
                    if self.client.get(key).startswith(f"{worker.leases.holder}:".encode()):
                        self.client.delete(key)

    def _revive(self, worker: SimWorker) -> None:
        """A killed worker is restarted as a fresh process: a new holder id, leases it left expire."""
        if worker.leases.dead:
            self._expire_leases()
            self.advance(3 * LEASE)
            worker.leases.dead = False
            worker.leases.holder = f"{worker.leases.holder}+"


def check_invariants(client: redis.Redis, ledger: Ledger, request_ids: list[str]) -> list[str]:
    """Everything that must hold once a schedule has drained; returns what does not."""
    broken = []
    states = StateStore(client, 3600)
    letters = DeadLetterStore(client, 1000, 3600)
    for request_id in request_ids:
        state = states.get(request_id)
        if ledger.completed(request_id) > 1:
            broken.append(f"{request_id}: {ledger.completed(request_id)} completed runs")
        if state is None or not state.status.terminal:
            broken.append(f"{request_id}: not terminal ({state.status.value if state else 'no state'})")
            continue
        if state.status in (Status.FAILED, Status.REJECTED, Status.DEAD_LETTERED) and letters.get(request_id) is None:
            broken.append(f"{request_id}: {state.status.value} without a dead letter")
        if state.status is Status.SUCCEEDED and ledger.completed(request_id) != 1:
            broken.append(f"{request_id}: succeeded without exactly one completed run")
        claim = client.get(keys.idempotency_key(state.idempotency_key or ""))
        if state.idempotency_key and state.status.value in ("failed", "rejected", "dead_lettered"):
            if claim == request_id.encode():
                broken.append(f"{request_id}: {state.status.value} but still holds its idempotency key")
    return broken
