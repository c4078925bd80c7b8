"""Schedules end to end: two real `trigger beat` processes, a real worker, one run per slot."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

from producers import keys
from producers.state import RequestState, parse_state
from tests.integration.conftest import REPO, Stack, zenml_runs

SCHEDULES = """\
- name: tick
  every: 2
  pipeline: slow_pipeline
  parameters: {seconds: 0.1}
"""


def start_beat(stack: Stack, schedules: Path, name: str) -> subprocess.Popen[bytes]:
    """`trigger beat` as an operator starts it (the console script's module), logging to the stack's logs."""
    log = open(stack.log_dir / f"{name}.log", "ab")
    command = [sys.executable, "-m", "producers.cli", "beat"]
    env = stack.env(TRIGGER_SCHEDULES_FILE=str(schedules))
    return subprocess.Popen(command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)


def scheduled_states(stack: Stack) -> list[RequestState]:
    """Every recorded request the schedule enqueued."""
    client = stack.redis
    names = list(client.scan_iter(match=keys.state_key("*"), count=1000))
    states = [parse_state(raw) for raw in client.mget(names)] if names else []
    return [state for state in states if state is not None and (state.source or "").startswith("schedule:")]


def wait_for_succeeded_slots(stack: Stack, beats: list[subprocess.Popen[bytes]], wanted: int) -> None:
    """Until `wanted` slots have a succeeded run (a deadline for a hung stack, not a timed assertion)."""
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        assert all(beat.poll() is None for beat in beats), f"a beat exited:\n{stack.logs()}"
        succeeded = {s.idempotency_key for s in scheduled_states(stack) if s.status.value == "succeeded"}
        if len(succeeded) >= wanted:
            return
        time.sleep(0.5)
    raise AssertionError(f"fewer than {wanted} scheduled runs succeeded:\n{stack.logs()}")


def stop(beats: list[subprocess.Popen[bytes]]) -> None:
    for beat in beats:
        beat.send_signal(signal.SIGTERM)
    for beat in beats:
        try:
            beat.wait(timeout=15)
        except subprocess.TimeoutExpired:
            beat.kill()
            beat.wait()


def test_two_beats_run_each_slot_once(stack: Stack, tmp_path: Path) -> None:
    stack.start_worker()
    schedules = tmp_path / "schedules.yaml"
    schedules.write_text(SCHEDULES)
    beats = [start_beat(stack, schedules, "beat1"), start_beat(stack, schedules, "beat2")]
    try:
        wait_for_succeeded_slots(stack, beats, wanted=3)
    finally:
        stop(beats)
    states = [stack.wait(state.request_id) for state in scheduled_states(stack)]

    by_slot: dict[str, list[str]] = defaultdict(list)
    for state in states:
        assert state.source == "schedule:tick"
        assert state.idempotency_key is not None and state.idempotency_key.startswith("schedule:tick:")
        by_slot[state.idempotency_key].append(state.status.value)
    assert all(statuses == ["succeeded"] for statuses in by_slot.values()), by_slot
    assert fired_slots(stack, "beat1") & fired_slots(stack, "beat2"), "no slot was fired by both beats"
    assert len(zenml_runs("slow_pipeline")) == len(by_slot)


def fired_slots(stack: Stack, beat: str) -> set[str]:
    """The idempotency keys one beat process logged as fired (its log is JSON lines)."""
    lines = (stack.log_dir / f"{beat}.log").read_text(errors="replace").splitlines()
    records = [json.loads(line) for line in lines if "trigger.schedule_fired" in line]
    return {record["idempotency_key"] for record in records}
