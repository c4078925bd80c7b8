"""The run time limit's soft part: an alarm that raises `RunTimeout` inside the run, and nothing after it."""

from __future__ import annotations

import signal
import threading
import time

import pytest

from worker.deadline import deadline
from worker.errors import PipelineRunFailed, RunTimeout


def test_a_run_past_its_limit_is_interrupted_with_run_timeout() -> None:
    started = time.monotonic()
    with pytest.raises(RunTimeout, match=r"run r-1 exceeded its run time limit of 0\.2s"), deadline(0.2, "run r-1"):
        time.sleep(30)
    assert time.monotonic() - started < 5
    assert issubclass(RunTimeout, PipelineRunFailed), "a timeout ends the request failed, never retried"


def test_the_alarm_is_cleared_and_the_old_handler_restored_on_exit() -> None:
    before = signal.getsignal(signal.SIGALRM)
    with deadline(0.5, "quick"):
        pass
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)
    assert signal.getsignal(signal.SIGALRM) is before
    time.sleep(0.7)  # nothing fires after the body is done


def test_a_run_that_swallows_the_first_interrupt_is_interrupted_again() -> None:
    caught = 0
    with pytest.raises(RunTimeout), deadline(0.1, "stubborn", repeat=0.1):
        for _ in range(50):
            try:
                time.sleep(1)
            except RunTimeout:
                caught += 1
                if caught == 1:
                    continue
                raise
    assert caught == 2


def test_off_the_main_thread_it_is_a_no_op() -> None:
    outcome: list[str] = []

    def body() -> None:
        with deadline(0.05, "threaded"):
            time.sleep(0.2)
        outcome.append("finished")

    thread = threading.Thread(target=body)
    thread.start()
    thread.join()
    assert outcome == ["finished"]
