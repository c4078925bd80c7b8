"""How many acknowledged requests a Redis failover loses, with and without `TRIGGER_ENQUEUE_MIN_REPLICAS=1`.

Each round starts a replicated Redis of its own (a primary, one replica, three sentinels on free loopback
ports; `tests/support/sentinels.py`) and a real `trigger worker --pool solo` on its sentinel URL. A
producer sends requests one after another without pause (each rejected by validation, a few ms of the
worker's time); after `--before` of them are enqueued the primary is SIGKILLed, the sentinels promote
the replica, and the killed server is started again, empty, as the new primary's replica. The producer
sends all the while, and then until `--after` more were enqueued on the new primary. Then every
request the producer was told is enqueued is looked up on the new primary: *lost* are those with no
terminal state after `--settle` seconds. Two cases: the
replica keeps up, or it stopped reading `--behind` seconds before the kill (SIGSTOP, resumed at the
kill: a replica fallen behind). Rounds alternate between cases and settings, so all four are measured
in the same run on the same machine. Prints one JSON object.

    python benchmarks/failover.py [--rounds 2] [--before 200] [--after 200] [--behind 1.0]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from support import REPO, WorkerProcess, finish_workdir, trigger_worker_env, venv_command, wait_terminal

sys.path.insert(0, str(REPO))  # the replicated Redis and the burst are the failover test's own

from producers.client import TriggerClient
from producers.settings import ProducerSettings
from tests.support.failover import PIPELINE, burst_through_failover, lost, outcomes
from tests.support.sentinels import SentinelGroup

WORKER_RECOVERY = {
    "TRIGGER_LEASE_TIMEOUT": "5",
    "TRIGGER_HEARTBEAT_INTERVAL": "1",
    "TRIGGER_LOST_AFTER": "3",
    "TRIGGER_SWEEP_INTERVAL": "1",
}
"""What the worker itself had in flight at the kill is recovered within seconds, so only real losses count."""


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=2, help="rounds per case and setting (alternating)")
    parser.add_argument("--before", type=int, default=200, help="requests enqueued before the failover starts")
    parser.add_argument("--after", type=int, default=200, help="requests enqueued after the failover")
    parser.add_argument("--behind", type=float, default=1.0, help="seconds the replica is paused in the second case")
    parser.add_argument("--settle", type=float, default=45, help="seconds to wait for terminal states")
    parser.add_argument("--keep-logs", action="store_true", help="keep the Redis and worker logs")
    return parser.parse_args()


def one_round(args: argparse.Namespace, min_replicas: int, behind: float, workdir: Path) -> dict[str, Any]:
    """One failover under one setting: what the producer was told, and what was recorded in the end."""
    workdir.mkdir()
    zenml_path = workdir / "zenml"
    zenml_path.mkdir()
    with SentinelGroup(workdir) as group:
        queue = f"bench-failover-{uuid.uuid4().hex[:8]}"
        settings = ProducerSettings(redis_url=group.url, queue=queue, enqueue_min_replicas=min_replicas)
        env = trigger_worker_env(group.url, queue, zenml_path, **WORKER_RECOVERY)
        command = [venv_command("trigger"), "worker", "--pool", "solo"]
        with WorkerProcess(command, env, workdir / "worker.log") as worker:
            wait_ready(settings, worker)
            burst = burst_through_failover(group, settings, args.before, args.after, replica_behind=behind)
            counted = outcomes(settings, burst.enqueued, args.settle)
            worker.check_alive()
    return {
        "enqueued": len(burst.enqueued),
        "refused": burst.refused,
        "lost": lost(counted),
        "statuses": dict(counted),
        "failover_s": round(burst.failover_seconds, 2),
    }


def wait_ready(settings: ProducerSettings, worker: WorkerProcess) -> None:
    """The worker is ready once it has rejected one probe request."""
    client = TriggerClient.from_settings(settings.model_copy(update={"enqueue_min_replicas": 0}))
    probe = client.trigger(PIPELINE, source="bench-readiness-probe")
    wait_terminal(client.redis, [probe], 120, worker, poll=0.1)


def totals(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """The rounds of one setting added up."""
    return {
        "enqueued": sum(r["enqueued"] for r in rounds),
        "lost": sum(r["lost"] for r in rounds),
        "refused": sum(r["refused"] for r in rounds),
        "failover_s": [r["failover_s"] for r in rounds],
        "rounds": rounds,
    }


CASES = {"replica_in_sync": False, "replica_behind": True}
"""The replica keeps up (loopback replication, microseconds behind) or stopped reading `--behind` seconds ago."""


def main() -> None:
    args = parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="bench-failover-"))
    runs: dict[str, list[dict[str, Any]]] = {}
    started, failed = time.time(), False
    try:
        for number in range(args.rounds):
            for case, paused in CASES.items():
                for min_replicas in (0, 1):
                    behind = args.behind if paused else 0
                    where = workdir / f"round-{number}-{case}-{min_replicas}"
                    runs.setdefault(f"{case}/min_replicas_{min_replicas}", []).append(
                        one_round(args, min_replicas, behind, where)
                    )
    except BaseException:
        failed = True
        raise
    finally:
        kept = finish_workdir(workdir, args.keep_logs, failed)
    output: dict[str, Any] = {
        "benchmark": "failover",
        "before": args.before,
        "after": args.after,
        "behind_s": args.behind,
        "seconds": round(time.time() - started, 1),
        **{name: totals(rounds) for name, rounds in runs.items()},
    }
    if kept:
        output["workdir"] = kept
    print(json.dumps(output, indent=2))


if __name__ == "__main__":
    main()
