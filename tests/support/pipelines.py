"""Pipelines used only by the integration tests: slow, failing and flaky runs."""

from __future__ import annotations

import logging
import os
import signal
import time

from zenml import pipeline, step


@step
def wait_a_while(seconds: float = 1.0) -> dict[str, float]:
    """Sleep, so a test can kill the worker mid-run; says so on stdout and in a log record, as steps do.

    In ticks, so a process paused mid-step (SIGSTOP) still has the rest of the sleep to go once resumed.
    """
    print(f"waiting {seconds:g}s")
    logging.getLogger(__name__).info("waited %gs", seconds)
    ticks = max(1, round(seconds / 0.1))
    for _ in range(ticks):
        time.sleep(seconds / ticks)
    return {"slept": seconds}


@pipeline(enable_cache=False)
def slow_pipeline(seconds: float = 1.0) -> None:
    """One step that takes `seconds`."""
    wait_a_while(seconds)


@step
def explode(reason: str = "boom") -> None:
    """Fail the way a buggy step fails."""
    raise ValueError(reason)


@pipeline(enable_cache=False)
def failing_pipeline(reason: str = "boom") -> None:
    """A pipeline whose only step always raises."""
    explode(reason)


@step
def call_unreachable_service() -> None:
    """Fail the way a step fails when a service is down."""
    raise ConnectionError("feature store at 127.0.0.1:1 refused the connection")


@pipeline(enable_cache=False)
def flaky_pipeline() -> None:
    """A pipeline whose step always hits a transient error."""
    call_unreachable_service()


@step
def ignore_interrupts(seconds: float = 60.0) -> None:
    """Block the run time limit's alarm, as native code can: only killing the process stops this."""
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM})
    time.sleep(seconds)


@pipeline(enable_cache=False)
def stubborn_pipeline(seconds: float = 60.0) -> None:
    """A run that ignores the run time limit's interrupt."""
    ignore_interrupts(seconds)


@step
def allocate(megabytes: int = 64) -> int:
    """Hold `megabytes` of memory at once."""
    block = bytearray(megabytes * 1024 * 1024)
    return len(block)


@pipeline(enable_cache=False)
def memory_hog_pipeline(megabytes: int = 64) -> None:
    """A run whose memory blows up."""
    allocate(megabytes)


@step
def kill_own_process() -> None:
    """Die the way an OOM-killed or segfaulting worker dies."""
    os.kill(os.getpid(), signal.SIGKILL)


@pipeline(enable_cache=False)
def suicide_pipeline() -> None:
    """A poison request: its run kills the worker every time."""
    kill_own_process()


TEST_PIPELINES = ",".join(
    [
        "pipelines.training:training_pipeline",
        "tests.support.pipelines:slow_pipeline",
        "tests.support.pipelines:failing_pipeline",
        "tests.support.pipelines:flaky_pipeline",
        "tests.support.pipelines:stubborn_pipeline",
        "tests.support.pipelines:memory_hog_pipeline",
        "tests.support.pipelines:suicide_pipeline",
    ]
)
