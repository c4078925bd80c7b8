"""`trigger status --wait` progress: one line rewritten on a terminal, a line per change when piped."""

from __future__ import annotations

import io
from collections.abc import Callable
from datetime import datetime, timezone

import fakeredis
import pytest
from click.testing import CliRunner

from producers import TriggerClient
from producers.cli import cli
from producers.progress import follow, progress_line
from producers.state import RequestState, Status


def scripted(*states: RequestState) -> Callable[[], RequestState]:
    """A read that returns each state in turn, then the last one forever."""
    remaining = list(states)
    return lambda: remaining.pop(0) if len(remaining) > 1 else remaining[0]


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def state(status: Status, attempts: int = 0, run_name: str | None = None) -> RequestState:
    return RequestState(request_id="r1", status=status, attempts=attempts, run_name=run_name)


def test_piped_output_is_one_plain_line_per_change_of_state() -> None:
    out, clock = io.StringIO(), Clock()
    running = state(Status.RUNNING, 1, "training_pipeline-r1-1")
    read = scripted(state(Status.QUEUED), state(Status.QUEUED), running, running, state(Status.SUCCEEDED, 1))

    final = follow(read, 60, out, tty=False, poll=1, clock=clock, sleep=clock.sleep)

    lines = out.getvalue().splitlines()
    assert final.status is Status.SUCCEEDED
    assert [line.split(" · ")[0] for line in lines] == ["r1: queued", "r1: running", "r1: succeeded"]
    assert "run training_pipeline-r1-1" in lines[1] and "\r" not in out.getvalue()


def test_a_terminal_gets_one_line_rewritten_in_place() -> None:
    out, clock = io.StringIO(), Clock()
    read = scripted(state(Status.QUEUED), state(Status.RUNNING, 1), state(Status.FAILED, 1))

    follow(read, 60, out, tty=True, poll=1, clock=clock, sleep=clock.sleep)

    text = out.getvalue()
    assert text.count("\r\033[2K") == 3 and text.endswith("\n") and text.count("\n") == 1
    assert "r1: failed · attempt 1" in text.rsplit("\r\033[2K", 1)[1]


def test_it_gives_up_after_the_timeout_with_the_last_state() -> None:
    out, clock = io.StringIO(), Clock()
    final = follow(scripted(state(Status.RUNNING, 1)), 5, out, tty=False, poll=1, clock=clock, sleep=clock.sleep)
    assert final.status is Status.RUNNING and clock.now == 5


def test_the_line_says_when_a_retry_comes() -> None:
    retrying = state(Status.RETRYING, 2).model_copy(
        update={"next_attempt_at": datetime(2026, 1, 1, 12, 30, 5, tzinfo=timezone.utc)}
    )
    assert progress_line(retrying, 3.25) == "r1: retrying · attempt 2 · next attempt at 12:30:05 · 3.2s"


def test_the_line_shows_the_zenml_step_while_running_and_a_line_per_step_when_piped() -> None:
    running = state(Status.RUNNING, 1)
    training = running.model_copy(update={"step": "train_model"})
    assert progress_line(training, 12.04) == "r1: running · attempt 1 · 12.0s · step train_model"
    done = state(Status.SUCCEEDED, 1).model_copy(update={"step": "evaluate_model"})
    assert "step" not in progress_line(done, 20.0), "an ended request is not in a step"

    out, clock = io.StringIO(), Clock()
    loading = running.model_copy(update={"step": "load_data"})
    read = scripted(running, loading, loading, training, done)
    follow(read, 60, out, tty=False, poll=1, clock=clock, sleep=clock.sleep)
    steps = [line.rsplit(" · ", 1)[-1] for line in out.getvalue().splitlines()]
    assert steps == ["0.0s", "step load_data", "step train_model", "4.0s"]


def test_status_wait_keeps_stdout_for_the_final_state(monkeypatch: pytest.MonkeyPatch) -> None:
    client = TriggerClient(fakeredis.FakeRedis())
    request_id = client.trigger("training_pipeline")
    done = client.status(request_id).advance(Status.SUCCEEDED, attempts=1)
    client.states.put(done)
    monkeypatch.setattr(TriggerClient, "from_env", classmethod(lambda cls: client))

    result = CliRunner().invoke(cli, ["status", request_id, "--wait", "5"])

    assert result.exit_code == 0, result.output
    assert result.stdout.startswith(f"{request_id}: succeeded")
    assert f"{request_id}: succeeded · attempt 1" in result.stderr
